package gridkv_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/store"
)

// listAll pages through prefix with pages of limit entries and returns every key, with the
// first page's Cursor.
func listAll(t *testing.T, ctx context.Context, kv *gridkv.GridKV, prefix string, limit int, opts ...gridkv.Option) ([]gridkv.Entry, gridkv.Cursor) {
	t.Helper()
	var all []gridkv.Entry
	var first gridkv.Cursor
	after := ""
	for i := 0; ; i++ {
		page, err := kv.List(ctx, prefix, append(opts, gridkv.WithLimit(limit), gridkv.WithStartAfter(after))...)
		if err != nil {
			t.Fatalf("List(%q) after %q: %v", prefix, after, err)
		}
		if i == 0 {
			first = page.Cursor
		}
		if len(page.Entries) > limit {
			t.Fatalf("a page of %d entries for a limit of %d", len(page.Entries), limit)
		}
		all = append(all, page.Entries...)
		if !page.More {
			return all, first
		}
		if len(page.Entries) == 0 {
			t.Fatal("a page with More and no entries")
		}
		after = page.Entries[len(page.Entries)-1].Key
	}
}

func entryKeys(es []gridkv.Entry) []string {
	var ks []string
	for _, e := range es {
		ks = append(ks, e.Key)
	}
	return ks
}

// List returns a prefix's keys in byte order, page by page, through every node, and sees
// every write acknowledged before it began.
func TestListPrefixInOrder(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Partitions: 8})
	ctx := testContext(t, 60*time.Second)
	var want []string
	for i := range 57 {
		key := fmt.Sprintf("cfg/%03d", (i*37)%57)
		want = append(want, key)
		if err := c.Node(i%3).KV.Set(ctx, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
		if err := c.Node(i%3).KV.Set(ctx, fmt.Sprint("other/", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	for i := range 3 {
		kv := c.Node(i).KV
		got, _ := listAll(t, ctx, kv, "cfg/", 10)
		if !slices.Equal(entryKeys(got), want) {
			t.Fatalf("node %d listed %v; want %v", i, entryKeys(got), want)
		}
		for _, e := range got {
			if string(e.Value) != e.Key || e.Version == 0 {
				t.Fatalf("entry %+v lost its value or version", e)
			}
		}
		// Linearizable: a write through one node is in the next List through another.
		key := fmt.Sprint("cfg/zz-", i)
		if err := c.Node((i+1)%3).KV.Set(ctx, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
		want = append(want, key)
		page, err := kv.List(ctx, "cfg/zz-")
		if err != nil || !slices.Contains(entryKeys(page.Entries), key) {
			t.Fatalf("List through node %d missed %s written just before through another: %v, %v", i, key, entryKeys(page.Entries), err)
		}
	}
	all, _ := listAll(t, ctx, c.Node(0).KV, "", 1000)
	if len(all) != 57*2+3 { // the cfg/ and other/ keys, and the three cfg/zz- keys
		t.Fatalf("listing every key gave %d, want %d", len(all), 57*2+3)
	}
	stale, _ := listAll(t, ctx, c.Node(1).KV, "cfg/0", 7, gridkv.WithConsistency(gridkv.Stale))
	for _, e := range stale {
		if !strings.HasPrefix(e.Key, "cfg/0") {
			t.Fatalf("a stale list of cfg/0 returned %s", e.Key)
		}
	}
}

func TestListAndWatchRefuseBadInput(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: cluster.LibraryPartitions}).Node(0).KV
	ctx := testContext(t, 10*time.Second)
	long := strings.Repeat("k", gridkv.MaxKeySize+1)
	for name, call := range map[string]func() error{
		"long prefix":      func() error { _, err := kv.List(ctx, long); return err },
		"long start after": func() error { _, err := kv.List(ctx, "", gridkv.WithStartAfter(long)); return err },
		"watch long prefix": func() error {
			for _, err := range kv.Watch(ctx, long) {
				return err
			}
			return nil
		},
	} {
		if err := call(); !errors.Is(err, gridkv.ErrInvalidKey) {
			t.Errorf("%s: %v; want ErrInvalidKey", name, err)
		}
	}
	if _, err := kv.List(ctx, "", gridkv.WithLimit(-1)); err == nil || !strings.Contains(err.Error(), "WithLimit(-1)") {
		t.Errorf("a negative limit: %v; want an error naming it", err)
	}
	if err := kv.Set(ctx, "k", []byte("v"), gridkv.WithTTL(-time.Second)); err == nil || !strings.Contains(err.Error(), "WithTTL(-1s)") {
		t.Errorf("a negative TTL: %v; want an error naming it", err)
	}
	bad, _ := gridkv.ParseCursor("c1.AQE") // a cursor of one partition; the node has more
	for _, err := range kv.Watch(ctx, "", gridkv.FromCursor(bad)) {
		if !errors.Is(err, gridkv.ErrInvalidCursor) {
			t.Errorf("a cursor of another cluster: %v; want ErrInvalidCursor", err)
		}
		break
	}
}

// watchN collects n events of a watch, failing on an error or after timeout.
func watchN(t *testing.T, ctx context.Context, kv *gridkv.GridKV, prefix string, n int, opts ...gridkv.Option) []gridkv.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got []gridkv.Event
	for ev, err := range kv.Watch(ctx, prefix, opts...) {
		if err != nil {
			t.Fatalf("watch after %d of %d events: %v", len(got), n, err)
		}
		got = append(got, ev)
		if len(got) == n {
			break
		}
	}
	return got
}

func describe(evs []gridkv.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, fmt.Sprintf("%s %s=%s", ev.Type, ev.Entry.Key, ev.Entry.Value))
	}
	return out
}

// List, then Watch from the page's Cursor: every change after the listing arrives once, in
// version order per key, with its type, on a node that hosts no replica of some partitions.
func TestListThenWatch(t *testing.T) {
	c := cluster.Start(t, 4, cluster.Options{Partitions: 8, Wait: cluster.WaitFormed})
	ctx := testContext(t, 90*time.Second)
	writer := c.Node(0).KV
	for i := range 10 {
		if err := writer.Set(ctx, fmt.Sprint("flags/", i), []byte("off")); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.Node(3).KV.List(ctx, "flags/")
	if err != nil || len(page.Entries) != 10 {
		t.Fatalf("List: %d entries, %v", len(page.Entries), err)
	}
	// Changes after the listing, through several nodes.
	if err := c.Node(1).KV.Set(ctx, "flags/3", []byte("on")); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(2).KV.Delete(ctx, "flags/4"); err != nil {
		t.Fatal(err)
	}
	e, err := writer.GetEntry(ctx, "flags/5")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.CompareAndSwap(ctx, "flags/5", e.Version, []byte("cas")); err != nil {
		t.Fatal(err)
	}
	e, _ = writer.GetEntry(ctx, "flags/6")
	if _, err := writer.CompareAndDelete(ctx, "flags/6", e.Version); err != nil {
		t.Fatal(err)
	}
	if err := writer.Set(ctx, "flags/3", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if err := writer.Set(ctx, "unwatched", []byte("x")); err != nil {
		t.Fatal(err)
	}
	want := []string{"put flags/3=on", "delete flags/4=", "put flags/5=cas", "delete flags/6=", "put flags/3=again"}
	for i := range 4 {
		got := watchN(t, ctx, c.Node(i).KV, "flags/", len(want), gridkv.FromCursor(page.Cursor))
		d := describe(got)
		// Changes of different partitions may interleave; those of one key keep their order.
		sorted := slices.Clone(d)
		slices.Sort(sorted)
		wantSorted := slices.Clone(want)
		slices.Sort(wantSorted)
		if !slices.Equal(sorted, wantSorted) {
			t.Fatalf("node %d watched %v; want %v in any order across keys", i, d, want)
		}
		if slices.Index(d, "put flags/3=on") > slices.Index(d, "put flags/3=again") {
			t.Fatalf("node %d: the changes of flags/3 came out of order: %v", i, d)
		}
		// Resuming from an event's Cursor yields what followed it, and nothing before.
		rest := watchN(t, ctx, c.Node(i).KV, "flags/", len(want)-1, gridkv.FromCursor(got[0].Cursor))
		if slices.Contains(describe(rest), d[0]) {
			t.Fatalf("node %d: resuming after %q yielded it again: %v", i, d[0], describe(rest))
		}
	}
}

// A watch without a Cursor starts at the moment it is called.
func TestWatchFromNow(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Partitions: 4})
	ctx := testContext(t, 60*time.Second)
	kv := c.Node(1).KV
	if err := kv.Set(ctx, "now/before", []byte("x")); err != nil {
		t.Fatal(err)
	}
	events := make(chan gridkv.Event, 10)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		for ev, err := range kv.Watch(wctx, "now/") {
			if err != nil {
				done <- err
				return
			}
			events <- ev
		}
	}()
	<-started
	// The watch starts at some point after the call; a marker written until it shows up
	// proves it has started, and nothing before the call may come.
	cluster.WaitFor(t, 20*time.Second, "the watch to see a marker", func() bool {
		if err := c.Node(0).KV.Set(ctx, "now/marker", []byte("m")); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			if ev.Entry.Key == "now/before" {
				t.Fatal("a watch from now yielded a change made before it was called")
			}
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the watch ended with %v; want context.Canceled", err)
	}
}

// A consumer slower than the history the cluster keeps gets ErrCompacted, never a skip.
func TestWatchSlowConsumerIsCompacted(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: 1, Mutate: func(_ int, o *gridkv.GridKVOptions) {
		o.Storage = &store.StorageOptions{HistoryEvents: 50}
	}}).Node(0).KV
	ctx := testContext(t, 60*time.Second)
	page, err := kv.List(ctx, "slow/")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Set(ctx, "slow/0", []byte("v")); err != nil {
		t.Fatal(err)
	}
	next := 0
	for ev, err := range kv.Watch(ctx, "slow/", gridkv.FromCursor(page.Cursor)) {
		if err != nil {
			if !errors.Is(err, gridkv.ErrCompacted) {
				t.Fatalf("the slow watch ended with %v; want ErrCompacted", err)
			}
			return
		}
		if want := fmt.Sprint("slow/", next); ev.Entry.Key != want {
			t.Fatalf("event %d is %s; want %s: a skip", next, ev.Entry.Key, want)
		}
		next++
		if next == 1 {
			for i := 1; i < 200; i++ { // far more than the history keeps, while this consumer sleeps
				if err := kv.Set(ctx, fmt.Sprint("slow/", i), []byte("v")); err != nil {
					t.Fatal(err)
				}
			}
		}
		if next == 1 {
			continue
		}
		t.Fatalf("the watch went on at %s after falling 150 changes behind a history of 50", ev.Entry.Key)
	}
	t.Fatal("the watch ended without an error")
}

// Keys written WithTTL vanish at their deadline on every node, from Get, stale Get and List,
// watchers see one EventExpire, and a rewrite without a TTL makes a key permanent again.
func TestTTL(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Partitions: 4})
	ctx := testContext(t, 60*time.Second)
	kv := c.Node(0).KV
	page, err := kv.List(ctx, "ttl/")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Node(1).KV.Set(ctx, "ttl/short", []byte("v"), gridkv.WithTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Set(ctx, "ttl/kept", []byte("v"), gridkv.WithTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Set(ctx, "ttl/kept", []byte("permanent")); err != nil { // no TTL: permanent again
		t.Fatal(err)
	}
	for i := range 3 { // through the leader and through nodes that forward to it
		e, err := c.Node(i).KV.GetEntry(ctx, "ttl/short")
		if err != nil || e.ExpiresAt.IsZero() || e.ExpiresAt.Before(start) || e.ExpiresAt.After(time.Now().Add(time.Second+100*time.Millisecond)) {
			t.Fatalf("GetEntry of a TTL key through node %d = %+v, %v; want ExpiresAt about a second ahead", i, e, err)
		}
	}
	cluster.WaitFor(t, 10*time.Second, "ttl/short to vanish on every node", func() bool {
		for i := range 3 {
			if _, err := c.Node(i).KV.Get(ctx, "ttl/short"); !errors.Is(err, gridkv.ErrKeyNotFound) {
				return false
			}
		}
		return true
	})
	if time.Since(start) < time.Second {
		t.Fatalf("ttl/short vanished after %v, before its TTL", time.Since(start))
	}
	for i := range 3 {
		if _, err := c.Node(i).KV.Get(ctx, "ttl/short", gridkv.WithConsistency(gridkv.Stale)); !errors.Is(err, gridkv.ErrKeyNotFound) {
			t.Fatalf("node %d: stale Get of an expired key: %v", i, err)
		}
		listed, _ := listAll(t, ctx, c.Node(i).KV, "ttl/", 10)
		if !slices.Equal(entryKeys(listed), []string{"ttl/kept"}) {
			t.Fatalf("node %d listed %v; want only ttl/kept", i, entryKeys(listed))
		}
	}
	got := watchN(t, ctx, c.Node(2).KV, "ttl/", 4, gridkv.FromCursor(page.Cursor))
	d := describe(got)
	want := []string{"put ttl/short=v", "put ttl/kept=v", "put ttl/kept=permanent", "expire ttl/short="}
	if slices.Index(d, "expire ttl/short=") < 0 || len(d) != 4 {
		t.Fatalf("watched %v; want %v", d, want)
	}
	// Once expired, a CompareAndSwap expecting absence succeeds.
	if _, err := kv.CompareAndSwap(ctx, "ttl/short", 0, []byte("back")); err != nil {
		t.Fatalf("CompareAndSwap(0) on an expired key: %v", err)
	}
	if v, err := c.Node(2).KV.Get(ctx, "ttl/kept"); err != nil || string(v) != "permanent" {
		t.Fatalf("ttl/kept = %q, %v; want it permanent", v, err)
	}
}

// A key past its deadline reads as absent at once, even while no expiry has applied (here the
// leader never proposes one), and a write to it is preceded by its expiry: watchers see
// EventExpire before the new value, and CompareAndSwap at version 0 succeeds.
func TestTTLWriteAfterDeadline(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: 2, Mutate: func(_ int, o *gridkv.GridKVOptions) {
		o.Timings.ReconcileInterval = time.Hour // no expiry proposed by the leader's own loop
	}}).Node(0).KV
	ctx := testContext(t, 30*time.Second)
	page, err := kv.List(ctx, "lease")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Set(ctx, "lease", []byte("old"), gridkv.WithTTL(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, 5*time.Second, "the lease to read as expired", func() bool {
		_, err := kv.Get(ctx, "lease")
		return errors.Is(err, gridkv.ErrKeyNotFound)
	})
	if listed, _ := kv.List(ctx, "lease"); len(listed.Entries) != 0 {
		t.Fatalf("List returned an expired key: %v", entryKeys(listed.Entries))
	}
	if _, err := kv.CompareAndSwap(ctx, "lease", 0, []byte("new")); err != nil {
		t.Fatalf("CompareAndSwap(0) on an expired key: %v", err)
	}
	got := describe(watchN(t, ctx, kv, "lease", 3, gridkv.FromCursor(page.Cursor)))
	want := []string{"put lease=old", "expire lease=", "put lease=new"}
	if !slices.Equal(got, want) {
		t.Fatalf("watched %v; want %v", got, want)
	}
}

// A node that hosts no replica of a partition streams its changes from a replica elsewhere;
// when that replica's node fails, the watch goes on from another, each change still once.
func TestWatchRemotePartitionThroughFailure(t *testing.T) {
	c := cluster.Start(t, 4, cluster.Options{Timings: cluster.FaultTimings, Partitions: 8, Wait: cluster.WaitBalanced})
	ctx := testContext(t, 120*time.Second)
	const watcher = 0
	// A partition node-0 holds no replica of, and the node leading it.
	p, leader := -1, -1
	for _, ps := range c.Node(watcher).KV.Status().Partitions {
		if !slices.Contains(ps.Replicas, c.Node(watcher).ID) && ps.Leader != "" {
			p, leader = ps.ID, c.Index(ps.Leader)
			break
		}
	}
	if p < 0 {
		t.Fatal("node-0 hosts every partition: with 4 nodes and 3 replicas it should not")
	}
	writer := c.Node((leader + 1) % 4)
	if (leader+1)%4 == watcher {
		writer = c.Node((leader + 2) % 4)
	}
	keys := []string{c.KeyIn("remote/a", p), c.KeyIn("remote/b", p)}
	page, err := c.Node(watcher).KV.List(ctx, "remote/")
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan gridkv.Event, 100)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	watchErr := make(chan error, 1)
	go func() {
		for ev, err := range c.Node(watcher).KV.Watch(wctx, "remote/", gridkv.FromCursor(page.Cursor)) {
			if err != nil {
				watchErr <- err
				return
			}
			events <- ev
		}
	}()
	expect := func(n int) []string {
		t.Helper()
		var got []string
		for len(got) < n {
			select {
			case ev := <-events:
				got = append(got, fmt.Sprintf("%s=%s", ev.Entry.Key, ev.Entry.Value))
			case err := <-watchErr:
				t.Fatalf("the watch ended: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatalf("%d of %d events after 30 s: %v", len(got), n, got)
			}
		}
		return got
	}
	for i, k := range keys {
		if err := writer.KV.Set(ctx, k, []byte(fmt.Sprint("before-", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := expect(2)
	t.Logf("watching partition %d from %s through %s: %v", p, c.Node(watcher).ID, c.Node(leader).ID, before)
	c.Crash(leader)
	cluster.WaitFor(t, 30*time.Second, "a new leader of the partition", func() bool {
		for _, ps := range writer.KV.Status().Partitions {
			if ps.ID == p {
				return ps.Leader != "" && ps.Leader != c.Node(leader).ID
			}
		}
		return false
	})
	for i, k := range keys {
		if err := writer.KV.Set(ctx, k, []byte(fmt.Sprint("after-", i))); err != nil {
			t.Fatal(err)
		}
	}
	after := expect(2)
	slices.Sort(after)
	if want := []string{keys[0] + "=after-0", keys[1] + "=after-1"}; !slices.Equal(after, want) {
		t.Fatalf("after the failure the watch yielded %v; want %v, each once", after, want)
	}
	select {
	case ev := <-events:
		t.Fatalf("an extra event: %s %s=%s", ev.Type, ev.Entry.Key, ev.Entry.Value)
	case <-time.After(500 * time.Millisecond):
	}
}

// A key written without a TTL, or made permanent again, reports no deadline through
// GetEntry on every node: the leader's own replica and those forwarding to it.
func TestGetEntryOfPermanentKeyHasNoDeadline(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Partitions: 4})
	ctx := testContext(t, 30*time.Second)
	kv := c.Node(0).KV
	if err := kv.Set(ctx, "plain", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Set(ctx, "was-ttl", []byte("v"), gridkv.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	e, err := kv.GetEntry(ctx, "was-ttl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.CompareAndSwap(ctx, "was-ttl", e.Version, []byte("w")); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		for _, key := range []string{"plain", "was-ttl"} {
			e, err := c.Node(i).KV.GetEntry(ctx, key)
			if err != nil || !e.ExpiresAt.IsZero() {
				t.Fatalf("GetEntry(%q) through node %d = %+v, %v; want no deadline", key, i, e, err)
			}
		}
	}
}

// CompareAndSwap WithTTL returns the deadline it wrote, whether the node it was called on
// leads the key's partition or forwards to the leader.
func TestCompareAndSwapReturnsItsDeadline(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Partitions: 4})
	ctx := testContext(t, 30*time.Second)
	for i := range 3 {
		key := fmt.Sprintf("cas-ttl/%d", i)
		start := time.Now()
		e, err := c.Node(i).KV.CompareAndSwap(ctx, key, 0, []byte("v"), gridkv.WithTTL(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if e.ExpiresAt.Before(start.Add(time.Minute)) || e.ExpiresAt.After(time.Now().Add(time.Minute+time.Second)) {
			t.Fatalf("CompareAndSwap WithTTL(1m) through node %d returned ExpiresAt %v, want about a minute from now", i, e.ExpiresAt)
		}
		got, err := c.Node(i).KV.GetEntry(ctx, key)
		if err != nil || !got.ExpiresAt.Equal(e.ExpiresAt) {
			t.Fatalf("GetEntry after CompareAndSwap: %v, %v; CompareAndSwap returned ExpiresAt %v", got, err, e.ExpiresAt)
		}
	}
}
