package console

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/health"
)

// column is one column of a live table: the cell key (data-f on the page,
// a key of Event.Cells) and its title.
type column struct{ Key, Title string }

// The columns of each live table.
var (
	backendColumns = []column{{"backend", "Backend"}, {"state", "State"}, {"breaker", "Breaker"},
		{"success", "Success"}, {"p50", "p50"}, {"p95", "p95"}, {"p99", "p99"}, {"in_flight", "In flight"},
		{"limit", "Concurrency limit"}, {"retry_budget", "Retry budget left"},
		{"availability", "Availability (1h)"}, {"since", "Since"}, {"reason", "Why"}, {"worker", "Reported by"}}
	workerColumns = []column{{"worker", "Worker"}, {"status", "Status"}, {"version", "Version"}, {"uptime", "Uptime"},
		{"in_flight", "In flight"}, {"done", "Done"}, {"failed", "Failed"}, {"dead_lettered", "Dead-lettered"},
		{"cache", "Cache hits"}, {"paused", "Paused routes"}, {"heartbeat", "Last heartbeat"}}
	alertColumns = []column{{"alert", "Alert"}, {"status", "Status"}, {"rule", "Rule"}, {"backend", "Backend"},
		{"value", "Value"}, {"threshold", "Threshold"}, {"at", "At"}, {"message", "Message"}}
	streamColumns = []column{{"stream", "Stream"}, {"messages", "Messages"}, {"bytes", "Bytes"},
		{"pending", "Consumer pending"}, {"ack_pending", "Ack pending"}, {"redelivered", "Redelivered"}}
	statColumns = []column{{"name", "Figure"}, {"value", "Value"}}
)

// row is a table row as the templates render it.
type row struct {
	Key   string
	Class string
	Cells map[string]string
}

func (e Event) row() row { return row{Key: e.Key, Class: e.Class, Cells: e.Cells} }

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func ms(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + " ms" }

func backendRow(b health.BackendEvent) Event {
	success := fmt.Sprintf("%.1f%%", 100*b.SuccessRate)
	if b.Calls < health.MinCalls {
		success = fmt.Sprintf("n/a (%d calls)", b.Calls)
	}
	return Event{Kind: KindBackend, Key: b.Backend, Class: "state-" + string(b.State) + " breaker-" + string(b.Breaker), Data: b, Cells: map[string]string{
		"backend": b.Backend, "state": string(b.State), "breaker": string(b.Breaker), "success": success,
		"p50": ms(b.LatencyMS.P50), "p95": ms(b.LatencyMS.P95), "p99": ms(b.LatencyMS.P99),
		"in_flight": strconv.Itoa(b.InFlight), "availability": fmt.Sprintf("%.3f%%", b.Availability),
		"since": stamp(b.Since), "reason": orDash(b.Reason), "worker": b.Worker,
		"limit": limitCell(b.ConcurrencyLimit), "retry_budget": budgetCell(b.RetryBudget),
	}}
}

// limitCell shows a backend's concurrency limit now (adaptive or fixed);
// "-" when it has none.
func limitCell(limit *int) string {
	if limit == nil {
		return "-"
	}
	return strconv.Itoa(*limit)
}

// budgetCell shows how many retries a backend's retry budget allows now
// (it accrues in fractions of a retry); "-" when it has no budget.
func budgetCell(left *float64) string {
	if left == nil {
		return "-"
	}
	return strconv.FormatFloat(*left, 'f', 1, 64)
}

func workerRow(w health.WorkerEvent, now time.Time) Event {
	status := string(w.Status)
	if w.Status == health.WorkerRunning && w.Interval > 0 && now.Sub(w.At) > time.Duration(3*w.Interval*float64(time.Second)) {
		status = "silent"
	}
	paused := strings.Join(w.PausedRoutes, ", ")
	return Event{Kind: KindWorker, Key: w.Worker, Class: "status-" + status, Data: w, Cells: map[string]string{
		"worker": w.Worker, "status": status, "version": w.Version,
		"uptime":    (time.Duration(w.UptimeSeconds) * time.Second).String(),
		"in_flight": strconv.FormatInt(w.InFlight, 10), "done": strconv.FormatUint(w.Tasks.Done, 10),
		"failed": strconv.FormatUint(w.Tasks.Failed, 10), "dead_lettered": strconv.FormatUint(w.Tasks.DeadLettered, 10),
		"cache": fmt.Sprintf("%.0f%%", 100*w.CacheHitRatio), "paused": orDash(paused),
		"heartbeat": stamp(w.At),
	}}
}

func alertRow(a health.AlertEvent) Event {
	return Event{Kind: KindAlert, Key: a.Alert, Class: "alert-" + string(a.Status), Data: a, Cells: map[string]string{
		"alert": a.Alert, "status": string(a.Status), "rule": string(a.Rule), "backend": orDash(a.Backend),
		"value": strconv.FormatFloat(a.Value, 'f', 2, 64), "threshold": strconv.FormatFloat(a.Threshold, 'f', 2, 64),
		"at": stamp(a.At), "message": orDash(a.Message),
	}}
}

func streamRow(s StreamInfo) Event {
	return Event{Kind: KindStream, Key: s.Name, Data: s, Cells: map[string]string{
		"stream": s.Name, "messages": strconv.FormatUint(s.Messages, 10), "bytes": strconv.FormatUint(s.Bytes, 10),
		"pending": strconv.FormatUint(s.Pending, 10), "ack_pending": strconv.Itoa(s.AckPending),
		"redelivered": strconv.Itoa(s.Redelivered),
	}}
}

func statRows(done, failed float64, dlqSize uint64, firing int) []Event {
	mk := func(key, name, value string) Event {
		return Event{Kind: KindStat, Key: key, Cells: map[string]string{"name": name, "value": value}}
	}
	return []Event{
		mk("done", "Tasks done /s", strconv.FormatFloat(done, 'f', 1, 64)),
		mk("failed", "Tasks failed /s", strconv.FormatFloat(failed, 'f', 1, 64)),
		mk("dlq", "DLQ entries", strconv.FormatUint(dlqSize, 10)),
		mk("alerts", "Alerts firing", strconv.Itoa(firing)),
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// StreamInfo is one stream's figures, consumers summed.
type StreamInfo struct {
	Name        string `json:"name"`
	Role        string `json:"role"` // tasks, results, dlq, health
	Messages    uint64 `json:"messages"`
	Bytes       uint64 `json:"bytes"`
	Consumers   int    `json:"consumers"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
}

// streams reads the figures of the installation's streams; a stream
// missing (no worker started yet) is left out.
func (c *Console) streams(ctx context.Context) ([]StreamInfo, error) {
	t := c.o.Topology
	var out []StreamInfo
	for _, s := range []struct{ role, name string }{
		{"tasks", t.TasksStream()}, {"results", t.ResultsStream()}, {"dlq", t.DLQStream()}, {"health", t.HealthStream()},
	} {
		st, err := c.js.Stream(ctx, s.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", s.name, err)
		}
		info := st.CachedInfo()
		si := StreamInfo{Name: s.name, Role: s.role, Messages: info.State.Msgs, Bytes: info.State.Bytes}
		if s.role == "tasks" {
			// The workers' shared durable consumer is the only one the
			// contract has: asked by name, which the operator user may
			// (listing consumers it may not). The others are read by
			// ephemeral ordered consumers, which say nothing of a backlog.
			cons, err := st.Consumer(ctx, bus.DefaultConsumer)
			switch {
			case err == nil:
				ci := cons.CachedInfo()
				si.Consumers, si.Pending, si.AckPending, si.Redelivered = 1, ci.NumPending, ci.NumAckPending, ci.NumRedelivered
			case errors.Is(err, jetstream.ErrConsumerNotFound):
			default:
				return nil, fmt.Errorf("consumer %s on %s: %w", bus.DefaultConsumer, s.name, err)
			}
		}
		out = append(out, si)
	}
	return out, nil
}
