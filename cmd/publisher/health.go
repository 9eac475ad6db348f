package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/health"
)

func (a *app) healthCmd() *cobra.Command {
	var watch, asJSON bool
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Show the current state of backends, workers and alerts",
		Long: `Print the current state of every backend and worker, and the firing alerts, from
the last event of each subject in the HEALTH stream (so it works whenever it is
run). --watch streams events as they come instead, one a line; --json prints
JSON (one object; with --watch, one event a line).`,
		Example: `  publisher health
  publisher health --watch --json | jq 'select(.state == "unhealthy")'`,
		Args: argsRange(0, 0, ""),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if watch {
				return a.watchHealth(cmd.Context(), asJSON)
			}
			return a.showHealth(cmd.Context(), asJSON)
		}),
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "stream events as they come")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return cmd
}

// healthState is the current state, as health --json prints it.
type healthState struct {
	Backends []health.BackendEvent `json:"backends"`
	Workers  []health.WorkerEvent  `json:"workers"`
	Alerts   []health.AlertEvent   `json:"alerts"` // firing only
}

func (a *app) showHealth(ctx context.Context, asJSON bool) error {
	topo, err := a.topology()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	nc, js, err := a.connectJS(ctx, "health")
	if err != nil {
		return err
	}
	defer nc.Close()
	s, err := js.Stream(ctx, topo.HealthStream())
	if err != nil {
		return streamHint(err, topo.HealthStream())
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(topo.HealthFilter()))
	if err != nil {
		return fmt.Errorf("stream %s: %w", topo.HealthStream(), err)
	}
	// Empty lists, not nulls: scripts index them.
	st := healthState{Backends: []health.BackendEvent{}, Workers: []health.WorkerEvent{}, Alerts: []health.AlertEvent{}}
	for _, subj := range slices.Sorted(maps.Keys(info.State.Subjects)) {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // aged out meanwhile
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", subj, err)
		}
		switch ev := decodeHealth(topo, subj, m.Data).(type) {
		case health.BackendEvent:
			st.Backends = append(st.Backends, ev)
		case health.WorkerEvent:
			st.Workers = append(st.Workers, ev)
		case health.AlertEvent:
			if ev.Status == health.Firing {
				st.Alerts = append(st.Alerts, ev)
			}
		}
	}
	if asJSON {
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	return a.printHealth(st, time.Now())
}

func (a *app) printHealth(st healthState, now time.Time) error {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tSTATE\tBREAKER\tSUCCESS\tP50\tP95\tP99\tAVAILABILITY\tIN-FLIGHT\tREASON\tREPORTED")
	for _, b := range st.Backends {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f%%\t%.1fms\t%.1fms\t%.1fms\t%.3f%%\t%d\t%s\t%s by %s\n",
			b.Backend, b.State, b.Breaker, 100*b.SuccessRate, b.LatencyMS.P50, b.LatencyMS.P95, b.LatencyMS.P99,
			b.Availability, b.InFlight, orDash(b.Reason), ago(b.At), b.Worker)
	}
	if len(st.Backends) == 0 {
		fmt.Fprintln(tw, "(no backend events)")
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "WORKER\tSTATUS\tUPTIME\tDONE\tFAILED\tDEAD-LETTERED\tIN-FLIGHT\tCACHE-HITS\tVERSION\tLAST-HEARTBEAT")
	for _, w := range st.Workers {
		status := w.Status
		if status == health.WorkerRunning && w.Interval > 0 && now.Sub(w.At) > time.Duration(3*w.Interval*float64(time.Second)) {
			status = "silent"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.0f%%\t%s\t%s\n", w.Worker, status,
			(time.Duration(w.UptimeSeconds) * time.Second).String(), w.Tasks.Done, w.Tasks.Failed, w.Tasks.DeadLettered,
			w.InFlight, 100*w.CacheHitRatio, w.Version, ago(w.At))
	}
	if len(st.Workers) == 0 {
		fmt.Fprintln(tw, "(no worker heartbeats)")
	}
	if len(st.Alerts) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "ALERT\tRULE\tVALUE\tTHRESHOLD\tSINCE\tMESSAGE")
		for _, al := range st.Alerts {
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%s\t%s\n", al.Alert, al.Rule, al.Value, al.Threshold, ago(al.At), al.Message)
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// decodeHealth decodes a health event by its subject's kind; nil when it
// is none of ours (health.DecodeEvent refuses it: oversized, malformed,
// lacking a field or naming another subject's backend, worker or alert).
func decodeHealth(topo bus.Topology, subject string, data []byte) any {
	ev, err := health.DecodeEvent(topo, subject, data)
	if err != nil {
		return nil
	}
	return ev
}

// healthLine is one watched event for people: its time, what and state;
// "" for an event decodeHealth drops.
func healthLine(topo bus.Topology, subject string, data []byte) string {
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	switch ev := decodeHealth(topo, subject, data).(type) {
	case health.BackendEvent:
		return fmt.Sprintf("%s backend %s %s breaker=%s success=%.1f%% p50=%.1fms p95=%.1fms p99=%.1fms availability=%.3f%% in_flight=%d %s by %s%s",
			stamp(ev.At), ev.Backend, ev.State, ev.Breaker, 100*ev.SuccessRate, ev.LatencyMS.P50, ev.LatencyMS.P95,
			ev.LatencyMS.P99, ev.Availability, ev.InFlight, ev.Kind, ev.Worker, suffix(ev.Reason))
	case health.WorkerEvent:
		return fmt.Sprintf("%s worker %s %s uptime=%s done=%d failed=%d dead_lettered=%d in_flight=%d cache_hits=%.0f%% version=%s",
			stamp(ev.At), ev.Worker, ev.Status, (time.Duration(ev.UptimeSeconds) * time.Second).String(), ev.Tasks.Done,
			ev.Tasks.Failed, ev.Tasks.DeadLettered, ev.InFlight, 100*ev.CacheHitRatio, ev.Version)
	case health.AlertEvent:
		return fmt.Sprintf("%s alert %s %s rule=%s value=%.2f threshold=%.2f by %s%s",
			stamp(ev.At), ev.Alert, strings.ToUpper(ev.Status), ev.Rule, ev.Value, ev.Threshold, ev.Worker, suffix(ev.Message))
	}
	return ""
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// watchHealth prints events as they are stored until ctx ends.
func (a *app) watchHealth(ctx context.Context, asJSON bool) error {
	topo, err := a.topology()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	nc, js, err := a.connectJS(cctx, "health")
	if err != nil {
		return err
	}
	defer nc.Close()
	cons, err := js.OrderedConsumer(cctx, topo.HealthStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{topo.HealthFilter()}, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("watch health: %w", streamHint(err, topo.HealthStream()))
	}
	werr := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		line := healthLine(topo, m.Subject(), m.Data())
		if line == "" {
			return // not one of ours: dropped, in --json too
		}
		line += "\n"
		if asJSON {
			line = string(m.Data()) + "\n"
		}
		if _, err := a.stdout.Write([]byte(line)); err != nil {
			select {
			case werr <- err:
			default:
			}
		}
	})
	if err != nil {
		return fmt.Errorf("watch health: %w", err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-werr:
		return err
	}
}
