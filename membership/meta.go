package membership

import (
	"fmt"
	"slices"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/feellmoose/gridkv/internal/protocol"
)

// MaxPartitions bounds the partition numbers a node can advertise in
// Meta.Leads: the lead set travels as a bitmap of MaxPartitions bits, which
// keeps the worst case (128 bytes) well inside memberlist.MetaMaxSize.
const MaxPartitions = 1024

// metaVersion is the first element of every encoded Meta, so a later format
// can be told apart from this one instead of being misread.
const metaVersion = 1

// Meta is what a node gossips about itself: it travels as memberlist node
// metadata (at most memberlist.MetaMaxSize bytes, msgpack-encoded).
type Meta struct {
	// ID is the node ID; it is also the memberlist node name.
	ID string
	// Addr is the node's advertised host:port (TCP and UDP).
	Addr string
	// Incarnation changes on every start of the node. The Raft server ID is
	// derived from ID and Incarnation by the caller, so a node that restarted
	// without its state never votes under its old identity.
	Incarnation uint64
	// ClusterID names the cluster the node belongs to; "" only while a
	// joining node has not learned it yet.
	ClusterID string
	// Leads lists the partitions the node currently leads, ascending, each in
	// [0, MaxPartitions).
	Leads []int
}

// clone returns a deep copy, so a Meta handed to a caller shares no slice
// with the one kept here.
func (m Meta) clone() Meta {
	m.Leads = slices.Clone(m.Leads)
	return m
}

// wireMeta is the encoded form of Meta. Encoding it as an array instead of a
// map drops the field names from every gossip message.
type wireMeta struct {
	_msgpack    struct{} `msgpack:",as_array"`
	Version     uint8
	ID          string
	Addr        string
	Incarnation uint64
	ClusterID   string
	Leads       []byte // bit p set <=> partition p is led
}

// encodeMeta encodes m for gossip. Leads outside [0, MaxPartitions) are
// rejected earlier (normalizeLeads), so they are silently skipped here.
func encodeMeta(m Meta) ([]byte, error) {
	w := wireMeta{
		Version:     metaVersion,
		ID:          m.ID,
		Addr:        m.Addr,
		Incarnation: m.Incarnation,
		ClusterID:   m.ClusterID,
		Leads:       leadsBitmap(m.Leads),
	}
	return msgpack.Marshal(&w)
}

// decodeMeta decodes metadata received from the network; it is foreign input
// and every malformed form yields an error wrapping ErrBadMeta.
func decodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 {
		return Meta{}, fmt.Errorf("%w: empty", ErrBadMeta)
	}
	var w wireMeta
	if err := protocol.Check(b); err != nil {
		return Meta{}, fmt.Errorf("%w: %w", ErrBadMeta, err)
	}
	if err := msgpack.Unmarshal(b, &w); err != nil {
		return Meta{}, fmt.Errorf("%w: %v", ErrBadMeta, err)
	}
	if w.Version != metaVersion {
		return Meta{}, fmt.Errorf("%w: version %d, want %d", ErrBadMeta, w.Version, metaVersion)
	}
	if w.ID == "" {
		return Meta{}, fmt.Errorf("%w: empty node ID", ErrBadMeta)
	}
	if len(w.Leads) > MaxPartitions/8 {
		return Meta{}, fmt.Errorf("%w: lead bitmap of %d bytes exceeds %d partitions", ErrBadMeta, len(w.Leads), MaxPartitions)
	}
	return Meta{
		ID:          w.ID,
		Addr:        w.Addr,
		Incarnation: w.Incarnation,
		ClusterID:   w.ClusterID,
		Leads:       bitmapLeads(w.Leads),
	}, nil
}

// leadsBitmap packs partition numbers into a bitmap just long enough for the
// highest one; nil when there are none.
func leadsBitmap(leads []int) []byte {
	highest := -1
	for _, p := range leads {
		if p >= 0 && p < MaxPartitions && p > highest {
			highest = p
		}
	}
	if highest < 0 {
		return nil
	}
	bm := make([]byte, highest/8+1)
	for _, p := range leads {
		if p >= 0 && p < MaxPartitions {
			bm[p/8] |= 1 << (p % 8)
		}
	}
	return bm
}

// bitmapLeads unpacks a bitmap into ascending partition numbers.
func bitmapLeads(bm []byte) []int {
	var leads []int
	for i, b := range bm {
		for bit := 0; bit < 8; bit++ {
			if b&(1<<bit) != 0 {
				leads = append(leads, i*8+bit)
			}
		}
	}
	return leads
}

// normalizeLeads returns a sorted, duplicate-free copy of leads and the
// entries it dropped for being outside [0, MaxPartitions).
func normalizeLeads(leads []int) (kept, dropped []int) {
	kept = make([]int, 0, len(leads))
	for _, p := range leads {
		if p < 0 || p >= MaxPartitions {
			dropped = append(dropped, p)
			continue
		}
		kept = append(kept, p)
	}
	slices.Sort(kept)
	kept = slices.Compact(kept)
	if len(kept) == 0 {
		kept = nil
	}
	return kept, dropped
}
