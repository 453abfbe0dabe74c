package main

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/feellmoose/gridkv"
)

//go:embed page
var pageFiles embed.FS

// nodeStatus is what /status returns: the node's view of the cluster (gridkv.Status) and
// what this process served. The status page polls it.
type nodeStatus struct {
	gridkv.Status
	Ready         bool    `json:"Ready"`
	UptimeSeconds float64 `json:"UptimeSeconds"`
	// RESP counts the commands this node's RESP port answered; a reader derives ops/s
	// from two samples (the status page does).
	RESP *respStatus `json:"RESP,omitempty"`
	Time time.Time   `json:"Time"`
}

type respStatus struct {
	Address   string            `json:"Address"`
	Clients   int64             `json:"Clients"`
	Commands  uint64            `json:"Commands"`
	ByCommand map[string]uint64 `json:"ByCommand"`
}

// ready reports whether the node has joined and every partition has a leader it knows of.
func ready(st gridkv.Status) bool {
	if len(st.Partitions) == 0 {
		return false
	}
	for _, p := range st.Partitions {
		if p.Leader == "" {
			return false
		}
	}
	return true
}

func (n *node) status() nodeStatus {
	st := n.kv.Status()
	out := nodeStatus{Status: st, Ready: ready(st), UptimeSeconds: time.Since(n.start).Seconds(), Time: time.Now()}
	if n.resp != nil {
		out.RESP = &respStatus{
			Address:   n.resp.addr(),
			Clients:   n.resp.clients.Load(),
			Commands:  n.resp.stats.commands.Load(),
			ByCommand: n.resp.stats.byCommand(),
		}
	}
	return out
}

func newHTTPHandler(n *node, reg *prometheus.Registry, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(n.status())
	})
	// The process is up and its node open: it answers requests (some may fail until the
	// node is ready).
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if n.kv.Status().Partitions == nil { // closed
			http.Error(w, "closed\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	// Joined, and every partition has a leader: requests for any key can succeed.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		st := n.kv.Status()
		if !ready(st) {
			missing := 0
			for _, p := range st.Partitions {
				if p.Leader == "" {
					missing++
				}
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			if st.Partitions == nil {
				_, _ = w.Write([]byte("closed\n"))
			} else {
				_, _ = fmt.Fprintf(w, "not ready: %d of %d partitions without a known leader\n", missing, len(st.Partitions))
			}
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	page, _ := fs.Sub(pageFiles, "page")
	mux.Handle("GET /", http.FileServerFS(page))
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
