package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Metric is one measured figure.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Result is what one scenario measured.
type Result struct {
	Scenario string            `json:"scenario"`
	Params   map[string]string `json:"params"`
	Metrics  []Metric          `json:"metrics"`
	Notes    []string          `json:"notes,omitempty"`
	Events   int               `json:"events"` // events the server handled, for CPU per 1,000 events
	Elapsed  float64           `json:"elapsed_s"`

	procStart *ProcStat // set by Bench.measuring: process figures count from here
}

func (r *Result) add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, Metric{name, v, unit})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// addLatency adds p50/p95/p99/max of samples under prefix.
func (r *Result) addLatency(prefix string, s Summary) {
	r.add(prefix+" p50", ms(s.P50), "ms")
	r.add(prefix+" p95", ms(s.P95), "ms")
	r.add(prefix+" p99", ms(s.P99), "ms")
	r.add(prefix+" max", ms(s.Max), "ms")
	r.add(prefix+" samples", float64(s.N), "")
}

// WriteTable prints r as a Markdown table.
func (r *Result) WriteTable(w io.Writer) {
	var ps []string
	for _, k := range sortedKeys(r.Params) {
		ps = append(ps, k+"="+r.Params[k])
	}
	fmt.Fprintf(w, "\n%s (%s)\n\n| metric | value | unit |\n|---|---:|---|\n", r.Scenario, strings.Join(ps, " "))
	for _, m := range r.Metrics {
		fmt.Fprintf(w, "| %s | %s | %s |\n", m.Name, format(m.Value), m.Unit)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}

func format(v float64) string {
	switch {
	case v == float64(int64(v)):
		return strconv.FormatInt(int64(v), 10)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}
