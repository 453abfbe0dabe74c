package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/feellmoose/gridkv"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPEndpoints(t *testing.T) {
	n := startTestNode(t)
	base := "http://" + n.httpAddr()
	rc := dialRESP(t, n.respAddr())
	for range 3 {
		rc.do("SET", "k", "v")
	}
	rc.do("GET", "k")

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
	code, body := get(t, base+"/metrics")
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", `gridkv_resp_commands_total{command="set"} 3`, "gridkv_resp_clients 1"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
	code, body = get(t, base+"/status")
	var st nodeStatus
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("/status = %d %v: %s", code, err, body)
	}
	if st.NodeID != "t1" || !st.Ready || len(st.Partitions) != 4 || len(st.Members) != 1 || st.RESP == nil ||
		st.RESP.Commands < 4 || st.RESP.ByCommand["get"] < 1 {
		t.Errorf("/status: %s", body)
	}
	if code, body := get(t, base+"/"); code != 200 || !strings.Contains(body, "<title>GridKV node</title>") {
		t.Errorf("/ = %d, page missing", code)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Errorf("/debug/pprof/ without -pprof = %d, want 404", code)
	}
}

func TestReadyNeedsEveryLeader(t *testing.T) {
	st := gridkv.Status{Partitions: []gridkv.PartitionStatus{{ID: 0, Leader: "a"}, {ID: 1}}}
	if ready(st) {
		t.Error("ready with a partition without a leader")
	}
	st.Partitions[1].Leader = "b"
	if !ready(st) {
		t.Error("not ready with every leader known")
	}
	if ready(gridkv.Status{}) {
		t.Error("ready without partitions (a closed node)")
	}
}
