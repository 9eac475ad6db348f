package console

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/schedule"
)

// ErrInvalidOption is wrapped by New's errors for a missing or impossible
// option.
var ErrInvalidOption = errors.New("invalid console option")

// Route is a route as the worker's config names it, for the routes table
// (the workers do not publish their routes; their heartbeats say which
// are paused).
type Route struct {
	Name     string   `json:"name"`
	Strategy string   `json:"strategy"`
	Backends []string `json:"backends"`
}

// Options configure a Console. Conn is required; the rest have the
// documented defaults.
type Options struct {
	// Conn is an operator's connection (it reads the DLQ and uses the
	// admin plane).
	Conn *nats.Conn
	// Topology names the streams and subjects; default: no prefix.
	Topology bus.Topology
	// AllowActions enables the POST actions; without it they answer 403.
	AllowActions bool
	// Token, when set, is required of every request: a bearer token, or
	// the cookie POST /login sets. Compared in constant time, never
	// logged.
	Token string
	// LoopbackOnly refuses requests whose Host header is not a loopback
	// name (localhost, 127.0.0.0/8, ::1): set it when listening on a
	// loopback address, so that a web page cannot reach the console by
	// DNS rebinding.
	LoopbackOnly bool
	// Routes are shown in the routes table; default none (then only the
	// paused routes the heartbeats report).
	Routes []Route
	// RequestTimeout bounds the NATS work of one request; default 10s.
	RequestTimeout time.Duration
	// AskWait is how long a control waits for the workers' replies on
	// the admin plane; default 500ms.
	AskWait time.Duration
	// StreamsInterval is how often the stream figures are sent to live
	// pages while any is open; default 5s.
	StreamsInterval time.Duration
	// Logger gets request failures; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Console serves the pages and the API. Create it with New, run Run, and
// serve Handler.
type Console struct {
	o     Options
	js    jetstream.JetStream
	admin *dlq.Admin
	sched *schedule.Client
	state *state
	// secret keys the CSRF token and the session cookie; new each run.
	secret []byte
	csrf   string
	pages  *pages

	runOnce sync.Once
}

// New checks o, opens the DLQ admin and reads the current health (the
// last event of every HEALTH subject), so that pages are whole from the
// first request. It starts nothing: Run follows the HEALTH stream.
func New(ctx context.Context, o Options) (*Console, error) {
	if o.Conn == nil {
		return nil, fmt.Errorf("%w: Conn is required", ErrInvalidOption)
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.AskWait <= 0 {
		o.AskWait = 500 * time.Millisecond
	}
	if o.StreamsInterval <= 0 {
		o.StreamsInterval = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	js, err := jetstream.New(o.Conn)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	admin, err := dlq.NewAdmin(ctx, js, o.Topology)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("console: secret: %w", err)
	}
	pg, err := loadPages()
	if err != nil {
		return nil, err
	}
	c := &Console{
		o: o, js: js, admin: admin,
		sched:  schedule.New(js, schedule.Options{Topology: o.Topology, AskWait: o.AskWait, Who: "console"}),
		state:  newState(o.Now),
		secret: secret,
		pages:  pg,
	}
	c.csrf = hex.EncodeToString(c.mac("csrf"))
	if err := c.loadCurrent(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Run follows the HEALTH stream (the last 15 minutes for the charts, then
// new events as they are stored)
// and sends the stream figures to live pages, until ctx ends; it returns
// nil then. Call it once.
func (c *Console) Run(ctx context.Context) error {
	started := false
	c.runOnce.Do(func() { started = true })
	if !started {
		return errors.New("console: Run called twice")
	}
	from := c.o.Now().Add(-window)
	cons, err := c.js.OrderedConsumer(ctx, c.o.Topology.HealthStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.o.Topology.HealthFilter()},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &from,
	})
	if err != nil {
		return fmt.Errorf("console: follow %s: %w", c.o.Topology.HealthStream(), err)
	}
	// The callback only updates memory and hands events to buffered
	// channels: it never blocks the consumer (see notes on Consume).
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, _ := m.Metadata()
		var at time.Time
		if meta != nil {
			at = meta.Timestamp
		}
		c.state.apply(c.o.Topology, m.Subject(), m.Data(), at, true)
	})
	if err != nil {
		return fmt.Errorf("console: follow %s: %w", c.o.Topology.HealthStream(), err)
	}
	defer cc.Stop()
	tick := time.NewTicker(c.o.StreamsInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if !c.state.watched() {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, c.o.RequestTimeout)
			streams, err := c.streams(rctx)
			cancel()
			if err != nil {
				c.o.Logger.Warn("console: stream figures", "err", err)
				continue
			}
			c.state.publishStreams(streams)
		}
	}
}

// loadCurrent reads the last event of every HEALTH subject: the current
// state, whatever its age.
func (c *Console) loadCurrent(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.RequestTimeout)
	defer cancel()
	s, err := c.js.Stream(ctx, c.o.Topology.HealthStream())
	if err != nil {
		return fmt.Errorf("console: stream %s: %w", c.o.Topology.HealthStream(), err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(c.o.Topology.HealthFilter()))
	if err != nil {
		return fmt.Errorf("console: stream %s: %w", c.o.Topology.HealthStream(), err)
	}
	for subj := range info.State.Subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("console: read %s: %w", subj, err)
		}
		c.state.apply(c.o.Topology, subj, m.Data, m.Time, false)
	}
	return nil
}

// Handler serves the pages, the API and the static files.
func (c *Console) Handler() http.Handler { return c.routes() }
