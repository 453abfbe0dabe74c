package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// row is one line of the results. Latencies are in microseconds; a zero ratio means "not
// applicable" and is left out of the JSON.
type row struct {
	Scenario     string  `json:"scenario"`
	Shape        string  `json:"shape,omitempty"`
	Workload     string  `json:"workload,omitempty"`
	Ops          int64   `json:"ops,omitempty"`
	Errors       int64   `json:"errors,omitempty"`
	OpsPerSec    float64 `json:"ops_per_sec,omitempty"`
	RawOpsPerSec float64 `json:"raw_ops_per_sec,omitempty"`
	RatioOps     float64 `json:"x_raw,omitempty"` // GridKV ops/s over the raw map's
	P50us        float64 `json:"p50_us,omitempty"`
	P95us        float64 `json:"p95_us,omitempty"`
	P99us        float64 `json:"p99_us,omitempty"`
	P999us       float64 `json:"p999_us,omitempty"`
	RawP99us     float64 `json:"raw_p99_us,omitempty"`
	RatioP99     float64 `json:"p99_x_raw,omitempty"` // GridKV p99 over the raw map's
	CPUPercent   float64 `json:"cpu_pct_of_core"`
	AllocsPerOp  float64 `json:"allocs_per_op,omitempty"`
	HeapBytes    int64   `json:"heap_bytes,omitempty"`
	RawHeapBytes int64   `json:"raw_heap_bytes,omitempty"`
	RatioHeap    float64 `json:"heap_x_raw,omitempty"`
	// Durable scenarios: the log fsyncs of every node together, and the writes each covered
	// (each write is fsynced by every replica of its partition, so a log's own batches hold
	// N times as many).
	FsyncsPerSec   float64 `json:"fsyncs_per_sec,omitempty"`
	WritesPerFsync float64 `json:"writes_per_fsync,omitempty"`
	Note           string  `json:"note,omitempty"`
}

// fill sets the figures of a workload row from GridKV's sample and the baseline's.
func (r *row) fill(s, raw *sample) {
	r.Ops, r.Errors = s.ops, s.errs
	r.OpsPerSec = s.opsPerSec()
	r.P50us = micros(s.hist.ValueAtQuantile(50))
	r.P95us = micros(s.hist.ValueAtQuantile(95))
	r.P99us = micros(s.hist.ValueAtQuantile(99))
	r.P999us = micros(s.hist.ValueAtQuantile(99.9))
	r.CPUPercent = s.cpuPercent()
	r.AllocsPerOp = s.allocsPerOp()
	if raw != nil {
		r.RawOpsPerSec = raw.opsPerSec()
		r.RawP99us = micros(raw.hist.ValueAtQuantile(99))
		if r.RawOpsPerSec > 0 {
			r.RatioOps = r.OpsPerSec / r.RawOpsPerSec
		}
		if r.RawP99us > 0 {
			r.RatioP99 = r.P99us / r.RawP99us
		}
	}
	if s.errs > 0 && s.lastErr != nil {
		r.Note = fmt.Sprintf("%d errors, last: %v", s.errs, s.lastErr)
	}
}

// fillFsyncs adds a durable row's fsyncs per second, summed over the nodes, and the writes
// per fsync, in front of any note fill wrote.
func (r *row) fillFsyncs(s *sample, w workload, sh shape) {
	r.FsyncsPerSec = s.fsyncsPerSec()
	note := fmt.Sprintf("%.0f fsyncs/s over %d nodes", r.FsyncsPerSec, sh.nodes)
	if s.fsyncs > 0 {
		writes := float64(s.ops) * (1 - w.readRatio)
		r.WritesPerFsync = writes / float64(s.fsyncs)
		note += fmt.Sprintf(", %.1f writes/fsync (each write in %d logs: %.1f per log fsync)",
			r.WritesPerFsync, sh.replicas, r.WritesPerFsync*float64(sh.replicas))
	}
	if r.Note != "" {
		note += "; " + r.Note
	}
	r.Note = note
}

func micros(ns int64) float64 { return float64(ns) / 1e3 }

// printTable writes the rows as an aligned table, under a line naming the run's settings.
func printTable(w io.Writer, header string, rows []row) error {
	fmt.Fprintln(w, header)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tops/s\tx raw\tp50\tp95\tp99\tp99.9\tp99 x raw\tcpu%\tallocs/op\t note")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t %s\n",
			r.Scenario, count(r.OpsPerSec), ratio(r.RatioOps),
			latency(r.P50us), latency(r.P95us), latency(r.P99us), latency(r.P999us),
			ratio(r.RatioP99), cpu(r), allocs(r), r.Note)
	}
	return tw.Flush()
}

func printJSON(w io.Writer, rows []row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

func count(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func ratio(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 0.01:
		return fmt.Sprintf("%.4fx", v)
	case v < 10:
		return fmt.Sprintf("%.3fx", v)
	default:
		return fmt.Sprintf("%.0fx", v)
	}
}

func latency(us float64) string {
	if us == 0 {
		return "-"
	}
	d := time.Duration(us * 1e3)
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", us)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.2fs", us/1e6)
	}
}

func cpu(r row) string {
	if r.HeapBytes != 0 || r.RawHeapBytes != 0 {
		return "-" // the heap scenario measures no CPU
	}
	return fmt.Sprintf("%.1f", r.CPUPercent)
}

func allocs(r row) string {
	if r.Ops == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", r.AllocsPerOp)
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

// progress writes the progress line on stderr: rewritten in place on a terminal, one line
// per step otherwise.
type progress struct {
	mu    sync.Mutex // guards last and the writes
	tty   bool
	last  int
	start time.Time
}

func newProgress() *progress {
	fi, err := os.Stderr.Stat()
	return &progress{tty: err == nil && fi.Mode()&os.ModeCharDevice != 0, start: time.Now()}
}

func (p *progress) step(format string, args ...any) {
	msg := fmt.Sprintf("bench %5.1fs: ", time.Since(p.start).Seconds()) + fmt.Sprintf(format, args...)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty {
		fmt.Fprintln(os.Stderr, msg)
		return
	}
	pad := max(p.last-len(msg), 0)
	fmt.Fprintf(os.Stderr, "\r%s%s", msg, strings.Repeat(" ", pad))
	p.last = len(msg)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.last > 0 {
		fmt.Fprintf(os.Stderr, "\r%s\r", strings.Repeat(" ", p.last))
	}
}
