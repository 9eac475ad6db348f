package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/health"
)

// HealthSnapshot is the current state of an installation: the last event
// of each subject of the HEALTH stream.
type HealthSnapshot struct {
	Backends []Backend           `json:"backends"`
	Workers  []Worker            `json:"workers"`
	Alerts   []health.AlertEvent `json:"alerts"` // firing only
}

// Backend is a backend's last event. HasCalls tells whether the event
// carried Calls and Rejected: workers of older versions do not send them,
// and their zeros would then read as facts.
type Backend struct {
	health.BackendEvent
	HasCalls, HasRejected bool `json:"-"`
}

// Worker is a worker's last heartbeat. HasPausedRoutes tells whether it
// reported its paused routes (older workers do not).
type Worker struct {
	health.WorkerEvent
	HasPausedRoutes bool `json:"-"`
}

// The statuses Liveness adds to a worker's own (health.WorkerRunning and
// the others it reports).
const (
	// WorkerSilent is a running worker whose heartbeats stopped: none for
	// three intervals.
	WorkerSilent health.WorkerStatus = "silent"
	// WorkerStarting is a running worker whose only heartbeat is the one
	// sent at its start: its zeros are not counts yet.
	WorkerStarting health.WorkerStatus = "starting"
)

// Liveness is the worker's status as of now: the one it reported, or,
// for a running worker, WorkerSilent when its heartbeats stopped and
// WorkerStarting when it has sent only its first.
func (w Worker) Liveness(now time.Time) health.WorkerStatus {
	if w.Status != health.WorkerRunning {
		return w.Status
	}
	if w.Interval > 0 && now.Sub(w.At) > time.Duration(3*w.Interval*float64(time.Second)) {
		return WorkerSilent
	}
	// The first heartbeat: its uptime is under one interval (the next
	// comes an interval after it), or under a second when the interval
	// is unknown, and it has counted nothing.
	young := w.UptimeSeconds < 1 || (w.Interval > 0 && w.UptimeSeconds < w.Interval)
	if young && w.Tasks == (health.Tasks{}) && w.InFlight == 0 {
		return WorkerStarting
	}
	return w.Status
}

// Health reads the snapshot. Events that are not Breakwater's (malformed,
// oversized, naming another subject's backend, worker or alert) are left
// out, and so are resolved alerts. Lists are empty, never nil. Without a
// deadline in ctx it is bounded by the request timeout.
func (c *Client) Health(ctx context.Context) (*HealthSnapshot, error) {
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	topo := c.o.topo
	s, err := c.js.Stream(ctx, topo.HealthStream())
	if err != nil {
		return nil, StreamHint(err, topo.HealthStream())
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(topo.HealthFilter()))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", topo.HealthStream(), err)
	}
	snap := &HealthSnapshot{Backends: []Backend{}, Workers: []Worker{}, Alerts: []health.AlertEvent{}}
	for _, subj := range slices.Sorted(maps.Keys(info.State.Subjects)) {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // aged out meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", subj, err)
		}
		ev, err := health.DecodeEvent(topo, subj, m.Data)
		if err != nil {
			continue
		}
		present := presentFields(m.Data)
		switch ev := ev.(type) {
		case health.BackendEvent:
			snap.Backends = append(snap.Backends, Backend{BackendEvent: ev, HasCalls: present["calls"], HasRejected: present["rejected"]})
		case health.WorkerEvent:
			snap.Workers = append(snap.Workers, Worker{WorkerEvent: ev, HasPausedRoutes: present["paused_routes"]})
		case health.AlertEvent:
			if ev.Status == health.Firing {
				snap.Alerts = append(snap.Alerts, ev)
			}
		}
	}
	return snap, nil
}

// HealthEvent is one event of the HEALTH stream as it was stored.
type HealthEvent struct {
	Subject string
	// Data is the event's JSON body as sent.
	Data []byte
	// Event is the decoded body: a health.BackendEvent, WorkerEvent or
	// AlertEvent.
	Event any
}

// WatchHealth yields health events as they are stored, until ctx ends
// (whose error is the last) or the caller stops. Events that are not
// Breakwater's are left out. See Results for how errors are yielded.
func (c *Client) WatchHealth(ctx context.Context) iter.Seq2[*HealthEvent, error] {
	return func(yield func(*HealthEvent, error) bool) {
		topo := c.o.topo
		for m, err := range c.follow(ctx, "watch health", topo.HealthStream(), topo.HealthFilter(), jetstream.DeliverNewPolicy) {
			if err != nil {
				if !yield(nil, err) {
					return
				}
				continue
			}
			ev, err := health.DecodeEvent(topo, m.Subject(), m.Data())
			if err != nil {
				continue // not one of ours
			}
			if !yield(&HealthEvent{Subject: m.Subject(), Data: m.Data(), Event: ev}, nil) {
				return
			}
		}
	}
}

// presentFields are the non-null top-level fields of an event's body.
func presentFields(data []byte) map[string]bool {
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(data, &fields) // the event itself decoded: only absent fields can remain
	out := make(map[string]bool, len(fields))
	for k, v := range fields {
		out[k] = string(v) != "null"
	}
	return out
}
