package testkit_test

import (
	"errors"
	"net"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/internal/testkit"
)

func TestStartServerDefaults(t *testing.T) {
	s := testkit.StartServer(t)
	nc, js := s.JetStream(t)
	if got := nc.MaxPayload(); got != 1<<20 {
		t.Errorf("max payload %d, want the server's default 1 MiB", got)
	}
	if s.JetStreamConfig() == nil || s.JetStreamConfig().SyncAlways {
		t.Errorf("JetStream %+v, want on with the default (lazy) fsync", s.JetStreamConfig())
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), "s.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := testkit.Msgs(t, js, "S"); got != 1 {
		t.Errorf("Msgs: got %d, want 1", got)
	}
}

func TestStartServerOptions(t *testing.T) {
	s := testkit.StartServer(t, testkit.NoJetStream(), testkit.MaxPayload(64<<10))
	if s.JetStreamEnabled() {
		t.Error("NoJetStream: JetStream on")
	}
	if got := s.Connect(t).MaxPayload(); got != 64<<10 {
		t.Errorf("max payload %d, want 64 KiB", got)
	}
	if !testkit.StartServer(t, testkit.SyncAlways()).JetStreamConfig().SyncAlways {
		t.Error("SyncAlways: the server does not fsync every write")
	}
}

// A server started from Base keeps its auth; one started on the store and
// port of a stopped one has its streams, at the same address.
func TestStartServerBaseStoreDirPort(t *testing.T) {
	s := testkit.StartServer(t, testkit.Base(&server.Options{Users: []*server.User{{Username: "u", Password: "p"}}}))
	if _, err := nats.Connect(s.URL()); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("connect without credentials: %v, want an authorization error", err)
	}
	s.Connect(t, nats.UserInfo("u", "p"))

	dir := t.TempDir()
	first := testkit.StartServer(t, testkit.StoreDir(dir))
	_, js := first.JetStream(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "KEPT"}); err != nil {
		t.Fatal(err)
	}
	port := first.Addr().(*net.TCPAddr).Port
	first.Shutdown()
	first.Shutdown() // twice is fine
	again := testkit.StartServer(t, testkit.StoreDir(dir), testkit.Port(port))
	if got := again.Addr().(*net.TCPAddr).Port; got != port {
		t.Errorf("port %d, want %d", got, port)
	}
	_, js = again.JetStream(t)
	if _, err := js.Stream(t.Context(), "KEPT"); err != nil {
		t.Errorf("the stream on the reused store: %v", err)
	}
}

func TestStartProcess(t *testing.T) {
	p := testkit.StartProcess(t, "sh", "/bin/sh", []string{"TESTKIT_WORD=hi"}, "-c", `echo "$TESTKIT_WORD"; echo oops >&2; exit 3`)
	if code := p.Wait(testkit.StopTimeout); code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
	if !p.Exited() || p.Err() == nil {
		t.Errorf("exited %v, err %v; want exited with an error", p.Exited(), p.Err())
	}
	if p.Stdout() != "hi\n" || p.Stderr() != "oops\n" {
		t.Errorf("stdout %q, stderr %q; want hi and oops", p.Stdout(), p.Stderr())
	}
}
