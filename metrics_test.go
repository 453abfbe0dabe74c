package gridkv_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/store"
)

// samples gathers reg and returns the samples of the family name whose labels include want,
// each as its value (a histogram's: its count), keyed by the labels want does not fix.
func samples(t testing.TB, reg prometheus.Gatherer, name string, want map[string]string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			var rest []string
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metric
				}
			}
			for _, k := range slices.Sorted(maps.Keys(have)) {
				if _, fixed := want[k]; !fixed {
					rest = append(rest, k+"="+have[k])
				}
			}
			out[strings.Join(rest, ",")] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// sum is the total of samples(...).
func sum(t testing.TB, reg prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	total := 0.0
	for _, v := range samples(t, reg, name, want) {
		total += v
	}
	return total
}

// lint fails the test for every problem promlint finds in reg.
func lint(t *testing.T, reg prometheus.Gatherer) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "gridkv_") {
			t.Errorf("metric %s does not start with gridkv_", f.GetName())
		}
	}
}

// TestMetricsCluster runs three nodes that share one registry, and a fourth added later,
// and checks that what they did shows in their metrics.
func TestMetricsCluster(t *testing.T) {
	const partitions = 8
	reg := prometheus.NewRegistry()
	c := cluster.Start(t, 3, cluster.Options{Partitions: partitions, Wait: cluster.WaitBalanced, Timings: cluster.FaultTimings,
		Mutate: func(i int, o *gridkv.GridKVOptions) {
			o.Metrics = reg
			o.Storage = &store.StorageOptions{MaxMemoryMB: 64}
			// Snapshots soon, and logs short enough that a new replica needs one.
			o.Timings.Raft.SnapshotThreshold = 32
			o.Timings.Raft.TrailingLogs = 8
			o.Timings.Raft.SnapshotInterval = 100 * time.Millisecond
		}})
	ctx := context.Background()
	node0 := map[string]string{"node": "node-0"}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := maps.Clone(base)
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}

	lint(t, reg)
	for _, name := range []string{"gridkv_operations_total", "gridkv_partitions", "gridkv_members"} {
		if got := samples(t, reg, name, nil); len(got) == 0 {
			t.Errorf("%s: no samples", name)
		}
	}

	// Operations from node 0, whose leaders are spread over the three nodes.
	// A loaded machine may depose a leader mid-write: such a write counts as unavailable.
	const sets = 200
	var setsOK float64
	for i := range sets {
		if err := c.Node(0).KV.Set(ctx, fmt.Sprintf("k%d", i), []byte("value")); err == nil {
			setsOK++
		} else {
			t.Logf("Set: %v", err)
		}
	}
	for i := range 10 {
		if _, err := c.Node(0).KV.Get(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Node(0).KV.Get(ctx, "absent"); !errors.Is(err, gridkv.ErrKeyNotFound) {
		t.Fatalf("Get of an absent key: %v", err)
	}
	if _, err := c.Node(0).KV.CompareAndSwap(ctx, "k1", 1, []byte("x")); !errors.Is(err, gridkv.ErrVersionMismatch) {
		t.Fatalf("CompareAndSwap at a wrong version: %v", err)
	}
	if err := c.Node(0).KV.Delete(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Node(0).KV.List(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(0).KV.Set(ctx, "", nil); err == nil {
		t.Fatal("Set of an empty key succeeded")
	}

	for _, want := range []struct {
		op, result string
		n          float64
	}{
		{"set", "ok", setsOK}, {"set", "unavailable", sets - setsOK}, {"set", "invalid", 1}, {"get", "ok", 10}, {"get", "not_found", 1},
		{"cas", "conflict", 1}, {"delete", "ok", 1}, {"list", "ok", 1}, {"cad", "ok", 0},
	} {
		if got := sum(t, reg, "gridkv_operations_total", with(node0, "op", want.op, "result", want.result)); got != want.n {
			t.Errorf("gridkv_operations_total{op=%q,result=%q} = %v, want %v", want.op, want.result, got, want.n)
		}
	}
	if got := sum(t, reg, "gridkv_operation_duration_seconds", with(node0, "op", "set")); got != sets+1 {
		t.Errorf("gridkv_operation_duration_seconds{op=set} counted %v, want %d", got, sets+1)
	}
	if got := sum(t, reg, "gridkv_operations_total", map[string]string{"node": "node-1"}); got != 0 {
		t.Errorf("node-1 served no API call, yet counts %v", got)
	}
	if got := sum(t, reg, "gridkv_forwarded_requests_total", with(node0, "op", "set")); got == 0 || got >= sets {
		t.Errorf("node-0 forwarded %v of %d sets; with balanced leaders it leads some partitions and not others", got, sets)
	}
	if got := sum(t, reg, "gridkv_forwarded_requests_total", map[string]string{"node": "node-1"}); got != 0 {
		t.Errorf("node-1 forwarded %v requests for no API call", got)
	}

	// Raft state: one leader per partition across the nodes, every replica at a term.
	cluster.WaitFor(t, 10*time.Second, "one leader per partition in the metrics", func() bool {
		leaders := samples(t, reg, "gridkv_partition_role", map[string]string{"role": "leader"})
		per := map[string]float64{}
		for labels, v := range leaders {
			for _, l := range strings.Split(labels, ",") {
				if p, ok := strings.CutPrefix(l, "partition="); ok {
					per[p] += v
				}
			}
		}
		for p := range partitions {
			if per[fmt.Sprint(p)] != 1 {
				t.Logf("partition %d: %v leaders", p, per[fmt.Sprint(p)])
				return false
			}
		}
		return true
	})
	for labels, term := range samples(t, reg, "gridkv_partition_term", nil) {
		if term < 1 {
			t.Errorf("gridkv_partition_term{%s} = %v", labels, term)
		}
	}
	for labels, applied := range samples(t, reg, "gridkv_partition_applied_index", node0) {
		commit := samples(t, reg, "gridkv_partition_commit_index", node0)[labels]
		if applied < 1 || commit < 1 {
			t.Errorf("node-0 {%s}: applied %v, commit %v", labels, applied, commit)
		}
	}
	if got := sum(t, reg, "gridkv_partition_leader_changes_total", nil); got < partitions {
		t.Errorf("leader changes over every replica: %v, want at least one per partition", got)
	}
	if got := sum(t, reg, "gridkv_partitions", node0); got != partitions {
		t.Errorf("gridkv_partitions = %v, want %d", got, partitions)
	}
	if got := sum(t, reg, "gridkv_partitions_leaderless", nil); got != 0 {
		t.Errorf("gridkv_partitions_leaderless summed over nodes = %v", got)
	}

	// Members and memory.
	for i := range 3 {
		node := map[string]string{"node": c.Node(i).ID}
		if got := sum(t, reg, "gridkv_members", with(node, "state", "alive")); got != 3 {
			t.Errorf("%s sees %v members alive, want 3", c.Node(i).ID, got)
		}
		if got := sum(t, reg, "gridkv_memory_limit_bytes", node); got != 64<<20 {
			t.Errorf("%s: memory limit %v, want %d", c.Node(i).ID, got, 64<<20)
		}
		if got := sum(t, reg, "gridkv_memory_used_bytes", node); got < float64(sets*store.EntrySize(4, 5)/2) {
			t.Errorf("%s: memory used %v after %d writes", c.Node(i).ID, got, sets)
		}
	}

	// Watchers, while one is open.
	wctx, stopWatch := context.WithCancel(ctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for _, err := range c.Node(1).KV.Watch(wctx, "w/") {
			if err != nil {
				return
			}
		}
	}()
	cluster.WaitFor(t, 10*time.Second, "one watcher on node-1", func() bool {
		return sum(t, reg, "gridkv_watchers", map[string]string{"node": "node-1"}) == 1
	})
	stopWatch()
	<-watching
	if got := sum(t, reg, "gridkv_watchers", map[string]string{"node": "node-1"}); got != 0 {
		t.Errorf("gridkv_watchers after the watch ended = %v", got)
	}

	// An expiry, proposed by whichever node leads the key's partition.
	if err := c.Node(0).KV.Set(ctx, "short-lived", []byte("x"), gridkv.WithTTL(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	cluster.WaitFor(t, 10*time.Second, "an expiry counted", func() bool {
		return sum(t, reg, "gridkv_expiries_total", nil) == 1
	})

	// Snapshots: taken by every replica past the threshold, installed by a new node whose
	// replicas start behind the leaders' compacted logs.
	cluster.WaitFor(t, 10*time.Second, "snapshots taken", func() bool {
		return sum(t, reg, "gridkv_snapshots_total", with(node0, "op", "take", "result", "ok")) > 0
	})
	if got := sum(t, reg, "gridkv_snapshot_duration_seconds", with(node0, "op", "take")); got == 0 {
		t.Errorf("snapshots taken, but no duration observed")
	}
	added := c.Add(t)
	cluster.WaitFor(t, 30*time.Second, added.ID+" installed a snapshot", func() bool {
		return sum(t, reg, "gridkv_snapshots_total", map[string]string{"node": added.ID, "op": "install", "result": "ok"}) > 0
	})
	lint(t, reg)

	// Close unregisters the node's collectors; the others keep theirs, and a node with the same
	// ID can register again.
	c.Stop(3)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "node" {
					seen[l.GetValue()] = true
				}
			}
		}
	}
	if seen[added.ID] || !seen["node-0"] {
		t.Errorf("after closing %s the registry holds nodes %v", added.ID, slices.Sorted(maps.Keys(seen)))
	}
	c.Restart(t, 3)
	if got := sum(t, reg, "gridkv_partitions", map[string]string{"node": added.ID}); got != partitions {
		t.Errorf("%s restarted: gridkv_partitions = %v", added.ID, got)
	}
}

// TestMetricsRegisterConflict checks that a node whose metrics cannot be registered does not
// start, and says why.
func TestMetricsRegisterConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	taken := prometheus.WrapRegistererWith(prometheus.Labels{"node": "node-0"}, reg)
	if err := taken.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "gridkv_watchers", Help: "taken"})); err != nil {
		t.Fatal(err)
	}
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	timings := gridkv.LocalTimings()
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{LocalNodeID: "node-0", LocalAddress: addr, Partitions: 2,
		Timings: &timings, Metrics: reg})
	if err == nil {
		kv.Close()
		t.Fatal("NewGridKV succeeded with its metrics already registered")
	}
	if !strings.Contains(err.Error(), "gridkv_watchers") {
		t.Errorf("NewGridKV: %v, want an error naming the metric", err)
	}
	// What the failed node registered before the conflict is gone again.
	if got := samples(t, reg, "gridkv_operations_total", nil); len(got) != 0 {
		t.Errorf("a failed start left %d operation series", len(got))
	}
}

// TestMetricsNoAllocs checks that metrics add no allocation to a stale read, the cheapest
// operation: one single-node cluster without metrics, one with.
func TestMetricsNoAllocs(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctx := context.Background()
	stale := gridkv.WithConsistency(gridkv.Stale)
	allocs := make([]float64, 2)
	for i, r := range []prometheus.Registerer{nil, reg} {
		kv := cluster.Start(t, 1, cluster.Options{Partitions: 2, Mutate: func(_ int, o *gridkv.GridKVOptions) {
			o.Metrics = r
		}}).Node(0).KV
		if err := kv.Set(ctx, "key", []byte("v")); err != nil {
			t.Fatal(err)
		}
		allocs[i] = testing.AllocsPerRun(1000, func() {
			if _, err := kv.Get(ctx, "key", stale); err != nil {
				t.Fatal(err)
			}
		})
	}
	if allocs[1] > allocs[0] {
		t.Errorf("a stale Get allocates %v times with metrics, %v without", allocs[1], allocs[0])
	}
	if got := sum(t, reg, "gridkv_operations_total", map[string]string{"op": "get", "result": "ok"}); got < 1000 {
		t.Errorf("counted %v gets", got)
	}
}

// The alert rules in docs are valid for promtool, pass their unit tests (each alert fires on
// the series that should raise it), and name only metrics a node exports.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed (.ci/run installs it)")
		}
		t.Skip("promtool is not installed: checking the alert rules needs it (apt-get install prometheus)")
	}
	for _, args := range [][]string{
		{"check", "rules", "gridkv-alerts.yml"},
		{"test", "rules", "gridkv-alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "docs"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	rules, err := os.ReadFile("docs/gridkv-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cluster.Start(t, 1, cluster.Options{Mutate: func(_ int, o *gridkv.GridKVOptions) { o.Metrics = reg }})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				exported[f.GetName()+suffix] = true
			}
		}
	}
	for _, name := range regexp.MustCompile(`gridkv_[a-z_]+`).FindAllString(string(rules), -1) {
		if !exported[name] {
			t.Errorf("the alert rules use %s, which a node does not export", name)
		}
	}
}
