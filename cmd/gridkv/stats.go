package main

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// respStats counts the commands one RESP server answered; Collect reads the counters when
// Prometheus scrapes.
type respStats struct {
	commands atomic.Uint64   // every command, known or not
	served   []atomic.Uint64 // by command, indexed as commandList
	unknown  atomic.Uint64

	desc    *prometheus.Desc
	clients *prometheus.Desc
	srv     *respServer
}

func newRESPStats() *respStats {
	return &respStats{
		served: make([]atomic.Uint64, len(commandList)),
		desc: prometheus.NewDesc("gridkv_resp_commands_total",
			"RESP commands this node answered, by command (\"unknown\" for names it does not serve).",
			[]string{"command"}, nil),
		clients: prometheus.NewDesc("gridkv_resp_clients",
			"RESP connections open on this node.", nil, nil),
	}
}

func (st *respStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- st.desc
	ch <- st.clients
}

func (st *respStats) Collect(ch chan<- prometheus.Metric) {
	for _, cmd := range commandList {
		ch <- prometheus.MustNewConstMetric(st.desc, prometheus.CounterValue, float64(st.served[cmd.index].Load()), cmd.name)
	}
	ch <- prometheus.MustNewConstMetric(st.desc, prometheus.CounterValue, float64(st.unknown.Load()), "unknown")
	if st.srv != nil {
		ch <- prometheus.MustNewConstMetric(st.clients, prometheus.GaugeValue, float64(st.srv.clients.Load()))
	}
}

// byCommand returns the non-zero per-command counts.
func (st *respStats) byCommand() map[string]uint64 {
	out := map[string]uint64{}
	for _, cmd := range commandList {
		if n := st.served[cmd.index].Load(); n > 0 {
			out[cmd.name] = n
		}
	}
	if n := st.unknown.Load(); n > 0 {
		out["unknown"] = n
	}
	return out
}
