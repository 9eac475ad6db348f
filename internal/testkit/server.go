package testkit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readyWithin bounds the wait for an embedded server to accept clients.
const readyWithin = 10 * time.Second

// Server is an embedded NATS server started for one test. The embedded
// *server.Server is there for what a test inspects (Addr, JetStreamConfig,
// ClientURL).
type Server struct {
	*server.Server
	shutdown sync.Once
}

// Option changes the settings of a server StartServer starts.
type Option func(*settings)

// settings are what StartServer starts a server from.
type settings struct {
	base  *server.Options
	edits []func(*server.Options)
	noJS  bool
}

// Base starts the server from a copy of o (its users, accounts, TLS,
// port...) instead of empty options. The kit's defaults fill what o leaves
// empty and the other options apply on top, whatever the order; JetStream
// is on unless NoJetStream, whatever o says.
func Base(o *server.Options) Option {
	return func(s *settings) { s.base = o.Clone() }
}

// NoJetStream starts a core NATS server (no JetStream, no store).
func NoJetStream() Option {
	return func(s *settings) { s.noJS = true }
}

// MaxPayload sets the server's max_payload (the server's default is 1 MiB;
// the worker's embedded server has 8 MiB).
func MaxPayload(n int32) Option {
	return edit(func(o *server.Options) { o.MaxPayload = n })
}

// SyncAlways makes JetStream fsync every write (sync_interval: always), as
// the worker's embedded server does. Without it the server's default
// (a lazy fsync every 2 minutes) applies, which is much faster.
func SyncAlways() Option {
	return edit(func(o *server.Options) { o.SyncAlways = true })
}

// StoreDir puts the JetStream store in dir instead of a fresh t.TempDir(),
// so that a second server can start on the first one's store.
func StoreDir(dir string) Option {
	return edit(func(o *server.Options) { o.StoreDir = dir })
}

// Port listens on port instead of a random free one (a restarted server
// that clients reconnect to).
func Port(port int) Option {
	return edit(func(o *server.Options) { o.Port = port })
}

func edit(f func(*server.Options)) Option {
	return func(s *settings) { s.edits = append(s.edits, f) }
}

// StartServer starts an embedded NATS server for t and waits until it
// accepts clients; it shuts down (and waits for its store to be flushed)
// when the test ends. Defaults: JetStream on a file store in t.TempDir(),
// 127.0.0.1 on a random port, no logging, no signal handlers; the server's
// own defaults for the rest (max_payload 1 MiB, lazy fsync). opts change
// them.
func StartServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var s settings
	for _, opt := range opts {
		opt(&s)
	}
	o := &server.Options{}
	if s.base != nil {
		o = s.base
	}
	o.JetStream = !s.noJS
	for _, f := range s.edits {
		f(o)
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = server.RANDOM_PORT
	}
	if o.JetStream && o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	o.NoLog, o.NoSigs = true, true
	srv, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("embedded nats server: %v", err)
	}
	started := &Server{Server: srv}
	go srv.Start() // owned by started: Shutdown stops it, at the latest at cleanup.
	t.Cleanup(started.Shutdown)
	if !srv.ReadyForConnections(readyWithin) {
		t.Fatalf("embedded nats server not ready within %s", readyWithin)
	}
	return started
}

// URL is the URL clients connect to.
func (s *Server) URL() string { return s.ClientURL() }

// Shutdown stops the server and waits until it has stopped (its store
// flushed). It is safe to call more than once; cleanup calls it too.
func (s *Server) Shutdown() {
	s.shutdown.Do(func() {
		s.Server.Shutdown()
		s.WaitForShutdown()
	})
}

// Connect connects to the server with opts; the connection closes when the
// test ends.
func (s *Server) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return Connect(t, s.URL(), opts...)
}

// JetStream connects to the server and returns the connection and a
// JetStream context on it; the connection closes when the test ends.
func (s *Server) JetStream(t testing.TB, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := s.Connect(t, opts...)
	return nc, JetStream(t, nc)
}

// Connect connects to url with opts and fails the test if it cannot; the
// connection closes when the test ends.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream is a JetStream context on nc; it fails the test if there is
// none.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// Msgs is how many messages stream holds; it fails the test if the stream
// cannot be read.
func Msgs(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyWithin)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.Msgs
}
