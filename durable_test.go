package gridkv_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/membership"
	"github.com/feellmoose/gridkv/store"
)

// durableCluster starts n nodes, node i keeping its state in dirs[i].
func durableCluster(t *testing.T, n int, o cluster.Options) (*cluster.Cluster, []string) {
	t.Helper()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	mutate := o.Mutate
	o.Mutate = func(i int, opts *gridkv.GridKVOptions) {
		opts.Storage = &store.StorageOptions{DataDir: dirs[i%n]}
		if mutate != nil {
			mutate(i, opts)
		}
	}
	return cluster.Start(t, n, o), dirs
}

// writeAcked writes count keys with CompareAndSwap through the nodes in turn and returns
// the entries acknowledged, with their versions.
func writeAcked(t *testing.T, c *cluster.Cluster, prefix string, count int) map[string]gridkv.Entry {
	t.Helper()
	ctx := testContext(t, 60*time.Second)
	live := c.Live()
	acked := make(map[string]gridkv.Entry, count)
	for i := range count {
		key := fmt.Sprintf("%s/%04d", prefix, i)
		e, err := live[i%len(live)].KV.CompareAndSwap(ctx, key, 0, []byte(key), gridkv.WithTTL(time.Hour))
		if err != nil {
			t.Fatalf("writing %s: %v", key, err)
		}
		acked[key] = e
	}
	return acked
}

// checkAcked reads every acknowledged entry back, linearizably, through every node.
func checkAcked(t *testing.T, c *cluster.Cluster, acked map[string]gridkv.Entry) {
	t.Helper()
	ctx := testContext(t, 60*time.Second)
	for _, n := range c.Live() {
		for key, want := range acked {
			got, err := n.KV.GetEntry(ctx, key)
			if err != nil {
				t.Fatalf("%s: GetEntry(%s) after the restart: %v", n.ID, key, err)
			}
			if string(got.Value) != string(want.Value) || got.Version != want.Version || !got.ExpiresAt.Equal(want.ExpiresAt) {
				t.Fatalf("%s: %s is %q@%d (expires %v) after the restart, was acknowledged as %q@%d (expires %v)",
					n.ID, key, got.Value, got.Version, got.ExpiresAt, want.Value, want.Version, want.ExpiresAt)
			}
		}
	}
}

func serverIDs(c *cluster.Cluster) map[string]string {
	out := make(map[string]string)
	for _, n := range c.Live() {
		out[n.ID] = cluster.Inspect.ServerID(n.KV)
	}
	return out
}

// checkSameMembers fails unless the cluster has exactly the nodes it had, under the Raft
// server IDs they had, every partition led by one of them with all three as voters.
func checkSameMembers(t *testing.T, c *cluster.Cluster, before map[string]string) {
	t.Helper()
	if after := serverIDs(c); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("server IDs after the restart %v, before %v", after, before)
	}
	cluster.WaitFor(t, 60*time.Second, "every partition led, its voters the nodes' old identities", c.IdentitiesLive)
	for _, n := range c.Live() {
		if got := len(n.KV.Status().Members); got != len(before) {
			t.Fatalf("%s lists %d members after the restart, want %d: %+v", n.ID, got, len(before), n.KV.Status().Members)
		}
	}
}

// Every node stops, then starts again with its original flags: the first node without
// seeds, the others with the live nodes as seeds. Every acknowledged write is there with its
// version and deadline, under the same identities; the first node rejoined its cluster
// rather than creating one.
func TestDurableClusterRestartsWithOriginalFlags(t *testing.T) {
	c, dirs := durableCluster(t, 3, cluster.Options{Partitions: 4, Wait: cluster.WaitFormed})
	acked := writeAcked(t, c, "flags", 200)
	before := serverIDs(c)
	clusterID := readIdentity(t, dirs[0])["cluster_id"]
	for i := range 3 {
		c.Stop(i)
	}
	c.RestartWithSeeds(t, 0, nil)
	for i := 1; i < 3; i++ {
		c.Restart(t, i)
	}
	c.WaitReady(t, 60*time.Second)
	checkAcked(t, c, acked)
	checkSameMembers(t, c, before)
	if got := readIdentity(t, dirs[0])["cluster_id"]; got != clusterID {
		t.Fatalf("node 0 is in cluster %v after the restart, was in %v", got, clusterID)
	}
	// The cluster goes on taking writes.
	checkAcked(t, c, writeAcked(t, c, "after", 20))
}

// Every node stops, then they start again in reverse order, each naming the others as
// seeds, none of which answers at first.
func TestDurableClusterRestartsWithEveryNodeAsSeed(t *testing.T) {
	c, _ := durableCluster(t, 3, cluster.Options{Partitions: 4, Wait: cluster.WaitFormed})
	acked := writeAcked(t, c, "seeds", 200)
	before := serverIDs(c)
	var addrs []string
	for i := range 3 {
		addrs = append(addrs, c.Node(i).Addr)
		c.Stop(i)
	}
	for i := 2; i >= 0; i-- {
		c.RestartWithSeeds(t, i, addrs)
	}
	c.WaitReady(t, 60*time.Second)
	checkAcked(t, c, acked)
	checkSameMembers(t, c, before)
}

// A node that crashed (no leave, no goodbye) comes back with its DataDir as the same voter
// of its groups while the others took writes, and catches up.
func TestCrashedDurableNodeRejoinsAsTheSameVoter(t *testing.T) {
	c, _ := durableCluster(t, 3, cluster.Options{Partitions: 4, Wait: cluster.WaitFormed})
	acked := writeAcked(t, c, "before", 100)
	before := serverIDs(c)
	c.Crash(1)
	for k, e := range writeAcked(t, c, "during", 100) {
		acked[k] = e
	}
	c.Restart(t, 1)
	c.WaitReady(t, 60*time.Second)
	checkSameMembers(t, c, before)
	checkAcked(t, c, acked)
}

func readIdentity(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	var id map[string]any
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatal(err)
	}
	return id
}

// A DataDir is refused, with an error that says why, when it belongs to another node, when
// a running node holds it, when the node's settings differ from the ones it was written
// with, and when it cannot be created.
func TestDataDirIsRefusedWhenNotThisNodes(t *testing.T) {
	dir := t.TempDir()
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	start := func(id string, partitions int, seeds ...string) (*gridkv.GridKV, error) {
		timings := gridkv.LocalTimings()
		return gridkv.NewGridKV(&gridkv.GridKVOptions{
			LocalNodeID: id, LocalAddress: addr, SeedAddrs: seeds, Partitions: partitions,
			Timings: &timings, Storage: &store.StorageOptions{DataDir: dir},
		})
	}
	kv, err := start("a", 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := start("a", 4); err == nil || !strings.Contains(err.Error(), "in use by another running node") {
		t.Fatalf("a second node on a DataDir in use: %v", err)
	}
	if err := kv.WaitReady(testContext(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	kv.Close()

	if _, err := start("b", 4); err == nil || !strings.Contains(err.Error(), `belongs to node "a"`) {
		t.Fatalf("node b on node a's DataDir: %v", err)
	}
	if _, err := start("a", 8); !errors.Is(err, gridkv.ErrClusterMismatch) || !strings.Contains(err.Error(), "Partitions") {
		t.Fatalf("node a with 8 partitions on a DataDir of 4: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	timings := gridkv.LocalTimings()
	_, err = gridkv.NewGridKV(&gridkv.GridKVOptions{LocalNodeID: "c", LocalAddress: addr, Timings: &timings,
		Storage: &store.StorageOptions{DataDir: filepath.Join(file, "data")}})
	if err == nil || !strings.Contains(err.Error(), "Storage.DataDir") {
		t.Fatalf("a DataDir under a file: %v", err)
	}
	// The refusals deleted nothing: node a starts again on its directory.
	kv, err = start("a", 4)
	if err != nil {
		t.Fatal(err)
	}
	kv.Close()
}

// A node with state from one cluster that is given a member of another as its seed fails to
// start with ErrForeignCluster, and joins nothing.
func TestDataDirOfAnotherClusterIsRefused(t *testing.T) {
	other := cluster.Start(t, 1, cluster.Options{Partitions: 4})
	dir := t.TempDir()
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	timings := gridkv.LocalTimings()
	opts := func(seeds ...string) *gridkv.GridKVOptions {
		return &gridkv.GridKVOptions{LocalNodeID: "lone", LocalAddress: addr, SeedAddrs: seeds, Partitions: 4,
			Timings: &timings, Storage: &store.StorageOptions{DataDir: dir}}
	}
	kv, err := gridkv.NewGridKV(opts())
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.WaitReady(testContext(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	kv.Close()
	_, err = gridkv.NewGridKV(opts(other.Node(0).Addr))
	if !errors.Is(err, membership.ErrForeignCluster) {
		t.Fatalf("a node of one cluster seeded with another's member: %v", err)
	}
	if n := len(other.Node(0).KV.Status().Members); n != 1 {
		t.Fatalf("the other cluster lists %d members, want 1", n)
	}
}

// A durable node counts its log fsyncs in gridkv_wal_fsyncs_total.
func TestDurableNodeCountsFsyncs(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, _ := durableCluster(t, 1, cluster.Options{Partitions: 2, Mutate: func(_ int, o *gridkv.GridKVOptions) { o.Metrics = reg }})
	writeAcked(t, c, "fsync", 20)
	got := samples(t, reg, "gridkv_wal_fsyncs_total", nil)
	var total float64
	for _, v := range got {
		total += v
	}
	if total < 1 {
		t.Fatalf("gridkv_wal_fsyncs_total = %v after 20 durable writes", got)
	}
}

// diskUsage returns the bytes of disk the files under dir occupy (allocated blocks: raft-wal
// preallocates its segments).
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while the walk ran: log segments and snapshots come and go
		}
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// Under steady overwrites disk use levels off: snapshots replace each other and the log is
// truncated behind them, whole segments at a time, so a node that has written several times
// its data's size holds a small multiple of it.
func TestDurableDiskUseLevelsOff(t *testing.T) {
	const (
		keys, rounds, valueSize = 500, 80, 4 << 10 // 160 MiB written over 2 MiB of live data
		writers                 = 32
	)
	c, dirs := durableCluster(t, 1, cluster.Options{Partitions: 2, Mutate: func(_ int, o *gridkv.GridKVOptions) {
		o.Timings.Raft.SnapshotThreshold = 64
		o.Timings.Raft.TrailingLogs = 16
		o.Timings.Raft.SnapshotInterval = 100 * time.Millisecond
		o.Storage.HistoryBytes = 256 << 10 // snapshots carry the watch history too
	}})
	kv := c.Node(0).KV
	ctx := testContext(t, 120*time.Second)
	value := make([]byte, valueSize)
	var usage []int64
	for round := range rounds {
		errs := make(chan error, writers)
		for w := range writers {
			go func() {
				var err error
				for k := w; k < keys && err == nil; k += writers {
					err = kv.Set(ctx, fmt.Sprintf("disk/%03d", k), value)
				}
				errs <- err
			}()
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if round%20 == 19 {
			usage = append(usage, diskUsage(t, dirs[0]))
		}
	}
	written := int64(keys * rounds * valueSize)
	t.Logf("disk use after every 20 rounds (%d MiB written in all): %v bytes", written>>20, usage)
	last := usage[len(usage)-1]
	// Per replica, at any moment: up to three snapshots of the data and history (the two
	// kept and one being written), up to four log segments of 8 MiB, preallocated (one
	// being written, one rotated in, two waiting for truncation to reach them), and a MiB for the small
	// files. Without truncation the log alone would hold every byte written.
	if bound := int64(2 * (3*(keys*valueSize/2+256<<10) + 4*8<<20 + 1<<20)); last > bound || 2*bound >= written {
		t.Fatalf("the DataDir holds %d MiB after %d MiB of overwrites of %d MiB of data (bound %d MiB): disk use does not level off",
			last>>20, written>>20, keys*valueSize>>20, bound>>20)
	}
}
