package membership

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegates implements memberlist's Delegate, EventDelegate, AliveDelegate
// and MergeDelegate for one Membership. It is a separate type so these
// callbacks do not show up in Membership's API.
//
// memberlist calls the event and alive callbacks with its node lock held, so
// they only take m.mu (a leaf lock) and never call back into memberlist.
// Every callback handles input from the network and recovers from panics:
// a malformed peer must not take the host process down.
type delegates struct {
	m *Membership
}

var (
	_ memberlist.Delegate      = (*delegates)(nil)
	_ memberlist.EventDelegate = (*delegates)(nil)
	_ memberlist.AliveDelegate = (*delegates)(nil)
	_ memberlist.MergeDelegate = (*delegates)(nil)
)

// refusalLogEvery limits how often the refusal of one foreign member is
// logged: its alive messages keep arriving as gossip retransmits.
const refusalLogEvery = 30 * time.Second

// recoverCallback logs a panic of the named callback; when errp is not nil
// the callback also fails, so memberlist refuses what it was checking.
func (d *delegates) recoverCallback(name string, errp *error) {
	if r := recover(); r != nil {
		d.m.logger.Error("memberlist callback panicked", "callback", name, "panic", r)
		if errp != nil {
			*errp = fmt.Errorf("membership: %s panicked: %v", name, r)
		}
	}
}

// NodeMeta returns our encoded metadata for memberlist's alive messages.
func (d *delegates) NodeMeta(limit int) (out []byte) {
	defer d.recoverCallback("NodeMeta", nil)
	m := d.m
	m.mu.Lock()
	meta := m.localMetaLocked()
	m.mu.Unlock()
	b, err := encodeMeta(meta)
	if err == nil && len(b) <= limit {
		return b
	}
	// Start checked the worst case, so this is a bug; gossiping without the
	// lead set beats memberlist's panic on oversized metadata.
	m.logger.Error("node metadata does not fit, gossiping it without leads", "size", len(b), "limit", limit, "err", err)
	meta.Leads = nil
	b, _ = encodeMeta(meta)
	return b
}

// NotifyMsg ignores user messages: this package sends none.
func (d *delegates) NotifyMsg([]byte) {}

// GetBroadcasts has nothing to piggyback: metadata travels in alive messages.
func (d *delegates) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState sends no user state with push/pull.
func (d *delegates) LocalState(join bool) []byte { return nil }

// MergeRemoteState ignores user state: peers send none.
func (d *delegates) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin records a member that became alive (new, or back from dead).
func (d *delegates) NotifyJoin(n *memberlist.Node) {
	defer d.recoverCallback("NotifyJoin", nil)
	if d.setMember(n, StateAlive) {
		d.m.logger.Info("member joined", "member", n.Name, "addr", n.Address())
	}
}

// NotifyUpdate records a member's new metadata; memberlist only sends it for
// a member it holds alive.
func (d *delegates) NotifyUpdate(n *memberlist.Node) {
	defer d.recoverCallback("NotifyUpdate", nil)
	d.setMember(n, StateAlive)
}

// NotifyLeave records a member that failed or left. memberlist does not set
// n.State here, so the member is recorded dead and watchLoop is asked for a
// snapshot at once, which tells a graceful leave (left) apart.
func (d *delegates) NotifyLeave(n *memberlist.Node) {
	defer d.recoverCallback("NotifyLeave", nil)
	if d.setMember(n, StateDead) {
		d.m.logger.Info("member gone", "member", n.Name)
		signal(d.m.recheck)
	}
}

// setMember stores what memberlist told us about n and reports whether it
// is another node. Our own entry is built from local fields, except that a
// Leave marks it left.
func (d *delegates) setMember(n *memberlist.Node, state State) bool {
	m := d.m
	if n.Name == m.cfg.NodeID {
		if state == StateLeft {
			m.mu.Lock()
			m.selfState = StateLeft
			m.mu.Unlock()
			signal(m.changed)
		}
		return false
	}
	meta, err := decodeMeta(n.Meta)
	if err != nil || meta.ID != n.Name {
		// NotifyAlive refuses such members, so only an event about a member
		// admitted before can get here; keep what identifies it.
		m.logger.Warn("member with unreadable metadata", "member", n.Name, "err", err)
		meta = Meta{ID: n.Name, Addr: n.Address()}
	}
	now := time.Now()
	m.mu.Lock()
	r, ok := m.members[n.Name]
	if !ok {
		r = &record{since: now}
		m.members[n.Name] = r
	}
	if r.state != state {
		r.since = now
	}
	r.meta, r.state = meta, state
	m.mu.Unlock()
	signal(m.changed)
	return true
}

// NotifyAlive admits a node's alive message only if its metadata is ours to
// read and it does not belong to another cluster. This also catches the
// passive merge paths (UDP gossip, periodic push/pull) that NotifyMerge does
// not see.
func (d *delegates) NotifyAlive(peer *memberlist.Node) (err error) {
	defer d.recoverCallback("NotifyAlive", &err)
	m := d.m
	meta, err := decodeMeta(peer.Meta)
	if err != nil {
		m.logRefusal(peer.Name, "", "refusing member with unreadable metadata", "err", err)
		return fmt.Errorf("member %s: %w", peer.Name, err)
	}
	if meta.ID != peer.Name {
		m.logRefusal(peer.Name, "", "refusing member whose metadata names another node", "meta_id", meta.ID)
		return fmt.Errorf("%w: member %s carries metadata of %s", ErrBadMeta, peer.Name, meta.ID)
	}
	ours := m.ClusterID()
	if ours != "" && meta.ClusterID != "" && meta.ClusterID != ours {
		m.logRefusal(peer.Name, meta.ClusterID, "refusing member from another cluster",
			"addr", peer.Address(), "local_cluster", ours, "remote_cluster", meta.ClusterID)
		return fmt.Errorf("%w: %s is in cluster %s, we are in %s", ErrForeignCluster, peer.Name, meta.ClusterID, ours)
	}
	return nil
}

// NotifyMerge decides a join push/pull (on both sides): the peers must agree
// on one cluster ID and it must be ours. A joining node without an ID adopts
// theirs here; one that learns no ID refuses, so Start retries.
func (d *delegates) NotifyMerge(peers []*memberlist.Node) (err error) {
	defer d.recoverCallback("NotifyMerge", &err)
	m := d.m
	if m.snapshotSides.Load() > 0 && d.holdsSelf(peers) {
		m.snapshotSides.Add(-1)
		snap := make(map[string]memberlist.NodeStateType, len(peers))
		for _, p := range peers {
			snap[p.Name] = p.State
		}
		m.mu.Lock()
		m.snapshot = snap
		m.mu.Unlock()
		return errSnapshot
	}
	theirs, from := "", ""
	for _, p := range peers {
		meta, err := decodeMeta(p.Meta)
		if err != nil {
			m.logRefusal(p.Name, "", "refusing merge with a member with unreadable metadata", "err", err)
			return fmt.Errorf("member %s: %w", p.Name, err)
		}
		switch {
		case meta.ClusterID == "":
		case theirs == "":
			theirs, from = meta.ClusterID, p.Name
		case meta.ClusterID != theirs:
			m.logger.Warn("refusing merge: peers disagree on their cluster",
				"member", p.Name, "cluster", meta.ClusterID, "other_member", from, "other_cluster", theirs)
			return fmt.Errorf("%w: peers %s and %s are in clusters %s and %s",
				ErrForeignCluster, from, p.Name, theirs, meta.ClusterID)
		}
	}

	if len(theirs) > MaxClusterIDLen {
		m.logRefusal(from, "", "refusing merge: cluster ID too long", "len", len(theirs), "max", MaxClusterIDLen)
		return fmt.Errorf("%w: cluster ID of %s has %d bytes, over %d", ErrBadMeta, from, len(theirs), MaxClusterIDLen)
	}
	m.mu.Lock()
	ours := m.clusterID
	adopted := ours == "" && theirs != ""
	if adopted {
		m.clusterID = theirs
	}
	m.mu.Unlock()

	switch {
	case adopted:
		m.logger.Info("adopted cluster ID from peers", "cluster", theirs, "from", from)
		signal(m.changed)
	case ours == "" && theirs == "":
		return fmt.Errorf("%w: none of %d peers knows its cluster ID yet", ErrJoinFailed, len(peers))
	case theirs != "" && theirs != ours:
		m.logRefusal(from, theirs, "refusing member from another cluster",
			"local_cluster", ours, "remote_cluster", theirs, "peers", len(peers))
		err := fmt.Errorf("%w: %s is in cluster %s, we are in %s", ErrForeignCluster, from, theirs, ours)
		m.mu.Lock()
		m.foreign = err
		m.mu.Unlock()
		return err
	}
	return nil
}

// holdsSelf reports whether peers include this very node (same name,
// incarnation and cluster), which marks our own state snapshot.
func (d *delegates) holdsSelf(peers []*memberlist.Node) bool {
	m := d.m
	m.mu.Lock()
	cluster := m.clusterID
	m.mu.Unlock()
	for _, p := range peers {
		if p.Name != m.cfg.NodeID {
			continue
		}
		meta, err := decodeMeta(p.Meta)
		return err == nil && meta.Incarnation == m.cfg.Incarnation && meta.ClusterID == cluster && cluster != ""
	}
	return false
}

// logRefusal logs a refusal at Warn, at most once per refusalLogEvery for
// the same member and cluster.
func (m *Membership) logRefusal(member, cluster, msg string, args ...any) {
	key := member + "\x00" + cluster
	now := time.Now()
	m.mu.Lock()
	if m.refusals == nil || len(m.refusals) > 1024 {
		m.refusals = make(map[string]time.Time) // bound memory under a flood of names
	}
	last, seen := m.refusals[key]
	quiet := seen && now.Sub(last) < refusalLogEvery
	if !quiet {
		m.refusals[key] = now
	}
	m.mu.Unlock()
	if !quiet {
		m.logger.Warn(msg, append([]any{"member", member}, args...)...)
	}
}
