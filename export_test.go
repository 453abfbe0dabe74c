package gridkv

import (
	"encoding/binary"
	"errors"
	"hash/fnv"

	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
	"github.com/hashicorp/raft"
)

// This file exposes internals to the external test package (gridkv_test) only.

// ReplicaDigest summarises one node's replica of one partition, for comparing replicas.
type ReplicaDigest struct {
	Partition int
	ServerID  string   // this replica's Raft server ID (node ID and incarnation)
	Leader    bool     // this replica believes it leads the group
	Voters    []string // voter server IDs in this replica's view of the configuration
	Applied   uint64   // the partition's applied index when the digest was taken
	Keys      int
	Sum       uint64 // order-independent hash of every key, value and version
}

// ReplicaDigests returns a digest of every partition kv hosts. A digest whose replica applied
// anything while it was taken is left out: it would mix two states.
func ReplicaDigests(kv *GridKV) []ReplicaDigest {
	var out []ReplicaDigest
	if kv.closed.Load() {
		return nil
	}
	for _, g := range kv.groups.Hosted() {
		part := g.Partition()
		d := ReplicaDigest{Partition: g.ID(), ServerID: LocalServerID(kv), Leader: g.IsLeader()}
		if cfg, err := g.Configuration(); err == nil {
			for _, s := range cfg.Servers {
				if s.Suffrage == raft.Voter {
					d.Voters = append(d.Voters, string(s.ID))
				}
			}
		}
		d.Applied = part.AppliedIndex()
		var buf [8]byte
		part.Range(func(key string, value []byte, version uint64) bool {
			h := fnv.New64a()
			h.Write([]byte(key))
			h.Write([]byte{0})
			h.Write(value)
			binary.BigEndian.PutUint64(buf[:], version)
			h.Write(buf[:])
			d.Sum += h.Sum64()
			d.Keys++
			return true
		})
		if part.AppliedIndex() != d.Applied {
			continue
		}
		out = append(out, d)
	}
	return out
}

// LocalServerID is kv's Raft server ID (node ID and incarnation).
func LocalServerID(kv *GridKV) string {
	return string(raftgroup.ServerID(kv.cfg.nodeID, kv.incarnation))
}

// ErrNotHostedLeader is returned by TransferLeadership when kv does not lead the partition.
var ErrNotHostedLeader = errors.New("this node does not lead the partition")

// TransferLeadership has kv, which must lead partition p, hand its leadership to another voter.
func TransferLeadership(kv *GridKV, p int) error {
	g := kv.groups.Group(p)
	if g == nil || !g.IsLeader() {
		return ErrNotHostedLeader
	}
	return g.TransferLeadership()
}

// ReplicaOf returns an opaque token for kv's replica of key's partition, nil if kv hosts none.
// Two calls return equal tokens only for the same replica instance: a replica dropped and
// opened again gets a new token.
func ReplicaOf(kv *GridKV, key string) any {
	if g := kv.groups.Group(ring.PartitionOf(key, kv.cfg.partitions)); g != nil {
		return g
	}
	return nil
}

// Batching sums, over the partitions kv hosts, the log entries its replicas proposed as leader
// and the commands those entries carried.
func Batching(kv *GridKV) (entries, commands uint64) {
	for _, g := range kv.groups.Hosted() {
		e, c := g.Batching()
		entries += e
		commands += c
	}
	return entries, commands
}

// ReadStats sums the read counters of every replica kv hosts.
func ReadStats(kv *GridKV) raftgroup.ReadStats {
	var sum raftgroup.ReadStats
	for _, g := range kv.groups.Hosted() {
		s := g.ReadStats()
		sum.Confirmed += s.Confirmed
		sum.Vouched += s.Vouched
		sum.Rounds += s.Rounds
		sum.HeartbeatRounds += s.HeartbeatRounds
	}
	return sum
}

// LeadsKey reports whether kv's replica of key's partition is that partition's leader.
func LeadsKey(kv *GridKV, key string) bool {
	g := kv.groups.Group(ring.PartitionOf(key, kv.cfg.partitions))
	return g != nil && g.IsLeader()
}
