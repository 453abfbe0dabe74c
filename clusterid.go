package gridkv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// clusterSettings are what every node of a cluster must agree on: they decide which partition
// holds a key and which nodes place its replicas. The first node fixes them and they travel in
// the cluster ID, which gossip hands every joining node.
type clusterSettings struct {
	partitions int
	replicas   int
}

// newClusterID returns a fresh cluster ID carrying s: 32 random hex digits, then ".p" and the
// partition count, then ".n" and the replica count.
func newClusterID(s clusterSettings) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s.p%d.n%d", hex.EncodeToString(b[:]), s.partitions, s.replicas)
}

// parseClusterID reads the settings of a cluster ID made by newClusterID. It reports false for
// an ID without them, as a cluster created by an earlier version has.
func parseClusterID(id string) (clusterSettings, bool) {
	parts := strings.Split(id, ".")
	if len(parts) != 3 || !strings.HasPrefix(parts[1], "p") || !strings.HasPrefix(parts[2], "n") {
		return clusterSettings{}, false
	}
	p, err1 := strconv.Atoi(parts[1][1:])
	n, err2 := strconv.Atoi(parts[2][1:])
	if err1 != nil || err2 != nil || p < 1 || p > MaxPartitions || n < 1 {
		return clusterSettings{}, false
	}
	return clusterSettings{partitions: p, replicas: n}, true
}
