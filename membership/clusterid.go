package membership

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// NewClusterSettingsID returns a fresh cluster ID that carries the settings every node of the
// cluster must agree on, fixed by its first node: 32 random hex digits, then ".p" and the
// partition count, then ".n" and the replica count. Gossip hands the ID to every joining node,
// which reads the settings back with ClusterSettings.
func NewClusterSettingsID(partitions, replicas int) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s.p%d.n%d", hex.EncodeToString(b[:]), partitions, replicas)
}

// ClusterSettings reads the partition and replica counts of a cluster ID made by
// NewClusterSettingsID. It reports false for an ID without them, as a cluster created by an
// earlier version has.
func ClusterSettings(id string) (partitions, replicas int, ok bool) {
	parts := strings.Split(id, ".")
	if len(parts) != 3 || !strings.HasPrefix(parts[1], "p") || !strings.HasPrefix(parts[2], "n") {
		return 0, 0, false
	}
	p, err1 := strconv.Atoi(parts[1][1:])
	n, err2 := strconv.Atoi(parts[2][1:])
	if err1 != nil || err2 != nil || p < 1 || p > MaxPartitions || n < 1 {
		return 0, 0, false
	}
	return p, n, true
}
