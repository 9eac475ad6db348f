package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/loadgen"
)

func TestBench(t *testing.T) {
	e := startServer(t)
	fakeWorker(t, e, bus.Topology{})
	r := runCmd(t, "", "--nats-url", e.url, "bench", "--count", "300", "--concurrency", "4", "--size", "64", "--timeout", "20s")
	wantOK(t, r)
	d := `[0-9.]+[mµn]?s`
	report := regexp.MustCompile(`^300 tasks, 4 concurrency, 64 bytes: [0-9]+ tasks/s\n` +
		`end-to-end latency incl\. queueing \(all tasks published at once\): p50 ` + d + `, p95 ` + d + `, p99 ` + d + `, max ` + d + `\n` +
		`note: if the server fsyncs every write \(sync_interval: always; worker --embedded does\), the disk bounds these figures\n` +
		`note: give --rate \(tasks/s the worker keeps up with\) to measure latency without queueing\n$`)
	if !report.MatchString(r.stdout) {
		t.Errorf("stdout %q, want it to match %s", r.stdout, report)
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
	var got loadgen.Report
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
	if got.Embedded {
		t.Error("embedded_server true on a plain server")
	}
}

// The report says what its latency is: with --rate, at that rate, with or
// without queueing as the results kept up or not (a report made here, so
// that no timing decides the case).
func TestBenchReportSaysWhatLatencyIs(t *testing.T) {
	lat := []time.Duration{time.Millisecond, 2 * time.Millisecond}
	tests := []struct {
		name string
		give loadgen.Report
		want []string
		not  []string
	}{
		{
			name: "all at once",
			give: loadgen.Report{Tasks: 2, Concurrency: 1, Size: 8, ResultsPerSec: 1351, Queueing: true},
			want: []string{"2 tasks, 1 concurrency, 8 bytes: 1351 tasks/s\n",
				"end-to-end latency incl. queueing (all tasks published at once): p50 1ms, p95 2ms, p99 2ms, max 2ms\n",
				"note: give --rate"},
		},
		{
			name: "rate kept up",
			give: loadgen.Report{Tasks: 2, Concurrency: 1, Size: 8, Rate: 2000, ResultsPerSec: 1990},
			want: []string{"end-to-end latency at --rate 2000/s (the worker kept up: no queueing behind a backlog): p50 1ms"},
			not:  []string{"incl. queueing", "note: give --rate"},
		},
		{
			name: "rate fell behind",
			give: loadgen.Report{Tasks: 2, Concurrency: 1, Size: 8, Rate: 2000, ResultsPerSec: 900, Queueing: true},
			want: []string{"end-to-end latency at --rate 2000/s, incl. queueing (results came at 900/s: the worker fell behind): p50 1ms"},
		},
		{
			name: "embedded server",
			give: loadgen.Report{Tasks: 2, Concurrency: 1, Size: 8, Rate: 2000, ResultsPerSec: 1990, Embedded: true},
			want: []string{"note: a worker's embedded server (worker --embedded) fsyncs every write unless started with --embedded-fsync interval"},
			not:  []string{"note: if the server"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			a := &app{stdout: &out}
			r := tt.give
			r.Latencies = lat
			if err := a.printBench(&r, false); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out.String(), w) {
					t.Errorf("report has %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// Against a worker's embedded server (bus.StartEmbedded, as worker
// --embedded runs it) the report says that it fsyncs every write.
func TestBenchNamesEmbeddedServer(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc := testkit.Connect(t, srv.ClientURL())
	js := testkit.JetStream(t, nc)
	if err := bus.EnsureStreams(t.Context(), js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{url: srv.ClientURL(), nc: nc, js: js}
	fakeWorker(t, e, bus.Topology{})
	r := runCmd(t, "", "--nats-url", e.url, "bench", "--count", "20", "--concurrency", "2", "--timeout", "20s")
	wantOK(t, r)
	if !strings.Contains(r.stdout, "note: a worker's embedded server (worker --embedded) fsyncs every write") {
		t.Errorf("stdout %q, want the embedded server's fsync named", r.stdout)
	}
	r = runCmd(t, "", "--nats-url", e.url, "bench", "--json", "--count", "20", "--concurrency", "2", "--timeout", "20s")
	wantOK(t, r)
	var got loadgen.Report
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !got.Embedded || !got.Queueing {
		t.Errorf("--json %s (%v), want embedded_server and latency_includes_queueing true", r.stdout, err)
	}
}

// The help of bench and publish names one default for --timeout, the one
// that applies there.
func TestTimeoutHelp(t *testing.T) {
	for _, cmd := range []string{"bench", "publish"} {
		r := runCmd(t, "", cmd, "--help")
		wantOK(t, r)
		var lines []string
		for line := range strings.SplitSeq(r.stdout, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "--timeout") {
				lines = append(lines, line)
			}
		}
		if len(lines) != 1 || strings.Count(lines[0], "default") != 1 {
			t.Errorf("%s --help: --timeout lines %q, want one naming one default", cmd, lines)
		}
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
