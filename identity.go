package gridkv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/feellmoose/gridkv/raftgroup"
)

// A durable node's DataDir holds, beside its replicas (see raftgroup.PartitionDir):
//
//	identity.json   who wrote this directory: cluster, node, incarnation, cluster settings,
//	                and the addresses of the members it last saw
//	LOCK            held (flock) while a node runs on the directory
const (
	identityFile   = "identity.json"
	lockFile       = "LOCK"
	identityFormat = 1
)

// identity is what lets a node started again on its DataDir be the node it was: the same
// Raft server IDs (node ID and incarnation), the same cluster, the same settings.
type identity struct {
	Format      int      `json:"format"`
	ClusterID   string   `json:"cluster_id"`
	NodeID      string   `json:"node_id"`
	Incarnation string   `json:"incarnation"` // hex, as in Raft server IDs
	Partitions  int      `json:"partitions"`
	Replicas    int      `json:"replicas"`
	Peers       []string `json:"peers,omitempty"` // host:port of the other members last seen
}

func (id *identity) incarnation() (uint64, error) {
	return strconv.ParseUint(id.Incarnation, 16, 64)
}

// dataDir is a node's open DataDir: locked against a second node, with the identity an
// earlier run left (nil when the directory is new).
type dataDir struct {
	path  string
	lock  *os.File
	found *identity
	saved identity // what is on disk now
}

// openDataDir opens, creating if needed, the DataDir of node nodeID and checks that it is
// this node's: another node's or another cluster's directory is refused, never wiped.
func openDataDir(path, nodeID string) (*dataDir, error) {
	fail := func(format string, args ...any) (*dataDir, error) {
		return nil, fmt.Errorf("gridkv: Storage.DataDir %q: "+format, append([]any{path}, args...)...)
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return fail("%v", err)
	}
	lock, err := os.OpenFile(filepath.Join(path, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fail("not writable: %v", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fail("in use by another running node")
		}
		return fail("locking: %v", err)
	}
	d := &dataDir{path: path, lock: lock}
	b, err := os.ReadFile(filepath.Join(path, identityFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		onDisk, err := raftgroup.PartitionsOnDisk(path)
		if err != nil {
			d.close()
			return fail("%v", err)
		}
		if len(onDisk) > 0 {
			d.close()
			return fail("holds replicas of %d partitions but no %s; refusing to guess whose they are", len(onDisk), identityFile)
		}
		return d, nil
	case err != nil:
		d.close()
		return fail("%v", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		d.close()
		return fail("%s is unreadable: %v", identityFile, err)
	}
	if id.Format != identityFormat {
		d.close()
		return fail("%s has format %d; this version reads %d", identityFile, id.Format, identityFormat)
	}
	if _, err := id.incarnation(); err != nil || id.ClusterID == "" || id.NodeID == "" {
		d.close()
		return fail("%s is incomplete or damaged", identityFile)
	}
	if id.NodeID != nodeID {
		d.close()
		return fail("belongs to node %q of cluster %s, not to LocalNodeID %q", id.NodeID, id.ClusterID, nodeID)
	}
	d.found, d.saved = &id, id
	return d, nil
}

// save writes id durably: a temporary file, fsynced, renamed over the old one, and the
// directory fsynced.
func (d *dataDir) save(id identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(d.path, identityFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(d.path, identityFile))
	}
	if err == nil {
		err = syncDir(d.path)
	}
	if err != nil {
		return fmt.Errorf("gridkv: saving %s in %s: %w", identityFile, d.path, err)
	}
	d.saved = id
	return nil
}

// savePeers records the other members' addresses when they changed.
func (d *dataDir) savePeers(peers []string) error {
	slices.Sort(peers)
	if slices.Equal(peers, d.saved.Peers) {
		return nil
	}
	id := d.saved
	id.Peers = peers
	return d.save(id)
}

func (d *dataDir) close() {
	if d != nil && d.lock != nil {
		d.lock.Close() // releases the flock
		d.lock = nil
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
