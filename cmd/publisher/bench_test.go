package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
)

func TestBench(t *testing.T) {
	e := startServer(t)
	fakeWorker(t, e, bus.Topology{})
	r := runCmd(t, "", "--nats-url", e.url, "bench", "--count", "300", "--concurrency", "4", "--size", "64", "--timeout", "20s")
	wantOK(t, r)
	line := regexp.MustCompile(`^300 tasks, 4 concurrency, 64 bytes: [0-9]+ tasks/s, p50 [0-9.]+[mµn]?s, p95 [0-9.]+[mµn]?s, p99 [0-9.]+[mµn]?s, max [0-9.]+[mµn]?s\n$`)
	if !line.MatchString(r.stdout) {
		t.Errorf("stdout %q, want it to match %s", r.stdout, line)
	}
	if r.stderr != "" {
		t.Errorf("stderr %q, want nothing", r.stderr)
	}
}

func TestBenchJSON(t *testing.T) {
	e := startServer(t)
	fakeWorker(t, e, bus.Topology{})
	r := runCmd(t, "", "--nats-url", e.url, "bench", "--json", "--count", "200", "--concurrency", "3",
		"--size", "10", "--warmup", "20", "--rate", "4000", "--timeout", "20s")
	wantOK(t, r)
	var got benchReport
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	if got.Tasks != 200 || got.Published != 200 || got.Received != 200 || got.Missing != 0 || got.PublishErrors != 0 ||
		got.Concurrency != 3 || got.Size != 10 || got.Warmup != 20 || got.Rate != 4000 {
		t.Errorf("report %+v, want 200 published and received of 200, concurrency 3, size 10, warmup 20, rate 4000", got)
	}
	l := got.LatencyMS
	if !(0 < l.Min && l.Min <= l.P50 && l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("latencies %+v, want 0 < min ≤ p50 ≤ p95 ≤ p99 ≤ max", l)
	}
	// 200 tasks at 4000/s take at least 50ms to publish.
	if got.ElapsedMS < 49 || got.PublishPerSec > 4400 {
		t.Errorf("elapsed %.1fms, publish rate %.0f/s; want ≥ 50ms and about 4000/s", got.ElapsedMS, got.PublishPerSec)
	}
}

func TestBenchMissingResults(t *testing.T) {
	e := startServer(t)
	fakeWorker(t, e, bus.Topology{})
	r := runCmd(t, "", "--nats-url", e.url, "bench", "--type", "silent", "--count", "5", "--concurrency", "2", "--timeout", "300ms")
	wantFail(t, r, exitFailure, "publisher: 5 of 5 results missing after 300ms\n")
	if !strings.Contains(r.stdout, "5 results missing, 0 publishes failed\n") {
		t.Errorf("stdout %q, want the missing count", r.stdout)
	}
}

func TestBenchNoStream(t *testing.T) {
	e := startServer(t)
	r := runCmd(t, "", "--nats-url", e.url, "--prefix", "nostream", "bench", "--count", "3", "--timeout", "1s")
	wantFail(t, r, exitFailure, "publisher: publish to nostream.tasks.echo: nats: no response from stream")
	if r.stdout != "" {
		t.Errorf("stdout %q, want no report when nothing was published", r.stdout)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	tests := []struct {
		give []time.Duration
		p    float64
		want time.Duration
	}{
		{d, 50, 50},
		{d, 95, 95},
		{d, 99, 99},
		{d, 100, 100},
		{d[:1], 50, 1},
		{d[:3], 50, 2},
		{d[:3], 99, 3},
		{nil, 50, 0},
	}
	for _, tt := range tests {
		if got := percentile(tt.give, tt.p); got != tt.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(tt.give), tt.p, got, tt.want)
		}
	}
}

func TestBenchPayload(t *testing.T) {
	pad := strings.Repeat("x", 256)
	tests := []struct {
		i, size int
		want    string
	}{
		{7, 20, `{"n":7,"pad":"xxxx"}`},
		{7, 16, `{"n":7,"pad":""}`},
		{123, 5, "123"},
		{12345, 3, "345"},
		{1, 0, ""},
	}
	for _, tt := range tests {
		got := string(benchPayload(tt.i, tt.size, pad))
		if got != tt.want {
			t.Errorf("benchPayload(%d, %d) = %q, want %q", tt.i, tt.size, got, tt.want)
		}
		if tt.size >= 16 && len(got) != tt.size {
			t.Errorf("benchPayload(%d, %d) has %d bytes", tt.i, tt.size, len(got))
		}
	}
}
