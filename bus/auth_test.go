package bus_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/bus/bustest"
	"github.com/breakwater/breakwater/internal/testkit"
)

// runServer starts a plain (no JetStream) server with the auth settings of
// opts on 127.0.0.1 (on a free port unless opts has one).
func runServer(t *testing.T, opts *server.Options) *testkit.Server {
	t.Helper()
	return testkit.StartServer(t, testkit.Base(opts), testkit.NoJetStream())
}

// logBuffer is a slog destination the connection's callbacks and the test
// share.
type logBuffer struct{ testkit.Buffer }

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// authCase is one auth method: a server that requires it, options that
// pass and options that the server refuses.
type authCase struct {
	name    string
	server  *server.Options
	scheme  string // of the URL; default nats
	good    []bus.ConnectOptions
	bad     []bus.ConnectOptions
	secrets []string // must never appear in an error or a log line
	// authErr: the server refuses bad credentials in the NATS protocol
	// (the client gives up); otherwise the TLS handshake fails and a
	// retrying client keeps trying, saying why.
	authErr bool
}

func authCases(t *testing.T) []authCase {
	nk, otherNK := bustest.NewNKeyUser(t), bustest.NewNKeyUser(t)
	op, otherOp := bustest.NewOperator(t), bustest.NewOperator(t)
	resolver := &server.MemAccResolver{}
	for pub, j := range map[string]string{op.SystemPub: op.SystemJWT, op.AccountPub: op.AccountJWT} {
		if err := resolver.Store(pub, j); err != nil {
			t.Fatal(err)
		}
	}
	certs := bustest.NewTLS(t)
	tlsConf, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CaFile: certs.CA, Verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return []authCase{
		{
			name:   "user and password",
			server: &server.Options{Users: []*server.User{{Username: "alice", Password: "pw-Xq81zz"}}},
			good:   []bus.ConnectOptions{{User: "alice", Password: "pw-Xq81zz"}},
			bad: []bus.ConnectOptions{
				{User: "alice", Password: "wrong-Kd73pp"},
				{User: "mallory", Password: "pw-Xq81zz"},
				{}, // no credentials at all
			},
			secrets: []string{"pw-Xq81zz", "wrong-Kd73pp"},
			authErr: true,
		},
		{
			name:    "token",
			server:  &server.Options{Authorization: "tok-Aq19vv"},
			good:    []bus.ConnectOptions{{Token: "tok-Aq19vv"}},
			bad:     []bus.ConnectOptions{{Token: "tok-wrong-Pz55"}, {}},
			secrets: []string{"tok-Aq19vv", "tok-wrong-Pz55"},
			authErr: true,
		},
		{
			name:    "nkey seed file",
			server:  &server.Options{Nkeys: []*server.NkeyUser{{Nkey: nk.Public}}},
			good:    []bus.ConnectOptions{{NKey: nk.SeedFile}},
			bad:     []bus.ConnectOptions{{NKey: otherNK.SeedFile}, {}},
			authErr: true,
		},
		{
			name: "creds of an operator-signed user",
			server: &server.Options{
				TrustedOperators: []*jwt.OperatorClaims{op.Claims},
				AccountResolver:  resolver,
				SystemAccount:    op.SystemPub,
			},
			good:    []bus.ConnectOptions{{Creds: op.CredsFile}, {Creds: op.NewUserCreds(t, "second")}},
			bad:     []bus.ConnectOptions{{Creds: otherOp.CredsFile}, {}},
			authErr: true,
		},
		{
			name:   "TLS with a client certificate",
			server: &server.Options{TLSConfig: tlsConf, TLS: true, TLSVerify: true},
			scheme: "tls",
			good:   []bus.ConnectOptions{{TLSCA: certs.CA, TLSCert: certs.ClientCert, TLSKey: certs.ClientKey}},
			bad: []bus.ConnectOptions{
				{TLSCA: certs.CA}, // no client certificate
				{TLSCA: certs.OtherCA, TLSCert: certs.ClientCert, TLSKey: certs.ClientKey}, // server not trusted
			},
		},
	}
}

func TestConnectAuthMethods(t *testing.T) {
	for _, tt := range authCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			s := runServer(t, tt.server)
			url := s.ClientURL()
			if tt.scheme != "" {
				url = strings.Replace(url, "nats://", tt.scheme+"://", 1)
			}
			for i, o := range tt.good {
				for _, retry := range []bool{false, true} {
					o.URL, o.RetryOnFailedConnect = url, retry
					var logs logBuffer
					o.Logger = logs.logger()
					ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
					nc, err := bus.Connect(ctx, o)
					cancel()
					if err != nil {
						t.Fatalf("good[%d] retry=%v: %v", i, retry, err)
					}
					if err := nc.Flush(); err != nil {
						t.Errorf("good[%d] retry=%v: flush: %v", i, retry, err)
					}
					nc.Close()
				}
			}
			for i, o := range tt.bad {
				o.URL = url
				var logs logBuffer
				o.Logger = logs.logger()
				_, err := bus.Connect(t.Context(), o)
				if err == nil {
					t.Fatalf("bad[%d]: connected, want an error", i)
				}
				if tt.authErr && !errors.Is(err, nats.ErrAuthorization) {
					t.Errorf("bad[%d]: got %v, want nats.ErrAuthorization", i, err)
				}
				noSecrets(t, "error", err.Error(), tt.secrets)

				// A retrying client (the worker) either gives up with the
				// reason or keeps trying and logs the reason.
				o.RetryOnFailedConnect = true
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() {
					nc, err := bus.Connect(ctx, o)
					if nc != nil {
						nc.Close()
					}
					done <- err
				}()
				if tt.authErr {
					select {
					case err = <-done:
					case <-time.After(20 * time.Second):
						t.Fatalf("bad[%d] retry: Connect still waiting after 20s; want it to give up", i)
					}
					if !errors.Is(err, nats.ErrAuthorization) {
						t.Errorf("bad[%d] retry: got %v, want nats.ErrAuthorization", i, err)
					}
				} else {
					testkit.Eventually(t, 20*time.Second, "a log line saying why", func() (bool, string) {
						return strings.Contains(logs.String(), "nats connect failed; retrying"), logs.String()
					})
					cancel()
					if err = <-done; !errors.Is(err, context.Canceled) {
						t.Errorf("bad[%d] retry: got %v, want context.Canceled", i, err)
					}
					if !strings.Contains(logs.String(), `"err":"`) {
						t.Errorf("bad[%d] retry: log has no reason: %s", i, logs.String())
					}
				}
				cancel()
				noSecrets(t, "error", err.Error(), tt.secrets)
				noSecrets(t, "log", logs.String(), tt.secrets)
			}
		})
	}
}

func noSecrets(t *testing.T, where, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s contains the secret %q: %s", where, s, text)
		}
	}
}

// TestConnectCredentialsInURL: user info in the URL authenticates, and
// neither errors nor logs show it.
func TestConnectCredentialsInURL(t *testing.T) {
	users := runServer(t, &server.Options{Users: []*server.User{{Username: "alice", Password: "urlpw-Hh27"}}})
	tokens := runServer(t, &server.Options{Authorization: "urltok-Jj38"})
	hostOf := func(s *testkit.Server) string { return strings.TrimPrefix(s.ClientURL(), "nats://") }
	tests := []struct {
		name string
		url  string
		ok   bool
	}{
		{"user and password", "nats://alice:urlpw-Hh27@" + hostOf(users), true},
		{"token", "nats://urltok-Jj38@" + hostOf(tokens), true},
		{"wrong password", "nats://alice:urlpw-wrong-Qq@" + hostOf(users), false},
		{"wrong token", "nats://urltok-wrong-Ww@" + hostOf(tokens), false},
	}
	secrets := []string{"urlpw-Hh27", "urltok-Jj38", "urlpw-wrong-Qq", "urltok-wrong-Ww", "alice"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuffer
			nc, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: tt.url, Logger: logs.logger()})
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				nc.Close()
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("connected, want an error")
			}
			if !strings.Contains(err.Error(), "connect to nats://127.0.0.1:") {
				t.Errorf("error %q does not name the server", err)
			}
			noSecrets(t, "error", err.Error(), secrets)
			noSecrets(t, "log", logs.String(), secrets)
		})
	}
}

// TestDisconnectLogsLastURL: the disconnect and reconnect lines name the
// server (not "url":""), without its user info.
func TestDisconnectLogsLastURL(t *testing.T) {
	opts := func(port int) *server.Options {
		return &server.Options{Port: port, Users: []*server.User{{Username: "alice", Password: "dcpw-Tt64"}}}
	}
	s := runServer(t, opts(0))
	port := s.Addr().(*net.TCPAddr).Port
	host := strings.TrimPrefix(s.ClientURL(), "nats://")
	var logs logBuffer
	nc, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: "nats://alice:dcpw-Tt64@" + host, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s.Shutdown()
	testkit.Eventually(t, 20*time.Second, "the disconnect line", func() (bool, string) { return strings.Contains(logs.String(), "nats disconnected"), logs.String() })
	runServer(t, opts(port))
	testkit.Eventually(t, 20*time.Second, "the reconnect line", func() (bool, string) { return strings.Contains(logs.String(), "nats reconnected"), logs.String() })
	want := `"url":"nats://` + host + `"`
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if (strings.Contains(line, "nats disconnected") || strings.Contains(line, "nats reconnected")) && !strings.Contains(line, want) {
			t.Errorf("line %s: want %s", line, want)
		}
	}
	noSecrets(t, "log", logs.String(), []string{"dcpw-Tt64", "alice"})
}

// TestConnectSeveralServers: a comma-separated list connects to whichever
// server is up, with and without retry.
func TestConnectSeveralServers(t *testing.T) {
	s := runServer(t, &server.Options{})
	for _, give := range []string{
		"nats://127.0.0.1:1," + s.ClientURL(),
		s.ClientURL() + ", 127.0.0.1:1",
		strings.TrimPrefix(s.ClientURL(), "nats://") + ",nats://127.0.0.1:1",
	} {
		for _, retry := range []bool{false, true} {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			nc, err := bus.Connect(ctx, bus.ConnectOptions{URL: give, RetryOnFailedConnect: retry})
			cancel()
			if err != nil {
				t.Fatalf("%q retry=%v: %v", give, retry, err)
			}
			if got := nc.ConnectedUrl(); got != s.ClientURL() {
				t.Errorf("%q: connected to %q, want %q", give, got, s.ClientURL())
			}
			nc.Close()
		}
	}
}

// TestConnectListReportsRefusal: with a dead server beside one that
// refuses the password, the error is the refusal, whichever nats.go tried
// last, not "no servers available".
func TestConnectListReportsRefusal(t *testing.T) {
	s := runServer(t, &server.Options{Users: []*server.User{{Username: "alice", Password: "list-pw"}}})
	for _, give := range []string{"nats://127.0.0.1:1," + s.ClientURL(), s.ClientURL() + ",nats://127.0.0.1:1"} {
		for range 5 { // nats.go shuffles the list
			_, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: give, User: "alice", Password: "wrong"})
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("%q: got %v, want nats.ErrAuthorization", give, err)
			}
		}
	}
}

func TestEnvOptions(t *testing.T) {
	env := map[string]string{
		"NATS_URL": "nats://e:1", "NATS_USER": "eu", "NATS_PASSWORD": "ep", "NATS_TOKEN": "et",
		"NATS_CREDS": "e.creds", "NATS_NKEY": "e.nk", "NATS_CA": "eca", "NATS_CERT": "ecert", "NATS_KEY": "ekey",
	}
	got := bus.EnvOptions(func(k string) string { return env[k] })
	want := bus.ConnectOptions{URL: "nats://e:1", User: "eu", Password: "ep", Token: "et", Creds: "e.creds",
		NKey: "e.nk", TLSCA: "eca", TLSCert: "ecert", TLSKey: "ekey"}
	if got != want {
		t.Errorf("EnvOptions: got %+v, want %+v", got, want)
	}
	if got := bus.EnvOptions(func(string) string { return "" }); got != (bus.ConnectOptions{}) {
		t.Errorf("EnvOptions of an empty environment: got %+v, want zero", got)
	}
}

func TestOrPrecedence(t *testing.T) {
	flags := bus.ConnectOptions{User: "flag-user", TLSCA: "flag-ca", Name: "n", RetryOnFailedConnect: true}
	env := bus.ConnectOptions{User: "env-user", Password: "env-pw", NKey: "env.nk", TLSCA: "env-ca"}
	file := bus.ConnectOptions{URL: "nats://file:1", Password: "file-pw", Token: "file-tok", Creds: "file.creds",
		TLSCert: "file-cert", TLSKey: "file-key", Name: "ignored"}
	got := flags.Or(env).Or(file)
	want := bus.ConnectOptions{URL: "nats://file:1", User: "flag-user", Password: "env-pw", Token: "file-tok",
		Creds: "file.creds", NKey: "env.nk", TLSCA: "flag-ca", TLSCert: "file-cert", TLSKey: "file-key",
		Name: "n", RetryOnFailedConnect: true}
	if got != want {
		t.Errorf("flags.Or(env).Or(file):\n got %+v\nwant %+v", got, want)
	}
}

func TestParseServers(t *testing.T) {
	tests := []struct {
		give    string
		want    []string
		wantErr string
	}{
		{give: "nats://127.0.0.1:4222", want: []string{"nats://127.0.0.1:4222"}},
		{give: "127.0.0.1:4222", want: []string{"nats://127.0.0.1:4222"}},
		{give: "localhost", want: []string{"nats://localhost"}},
		{give: "tls://a:1, nats://b:2,c:3", want: []string{"tls://a:1", "nats://b:2", "nats://c:3"}},
		{give: "ws://a:80,wss://b:443", want: []string{"ws://a:80", "wss://b:443"}},
		{give: "NATS://u:p@h:1", want: []string{"NATS://u:p@h:1"}},
		{give: "nats://[::1]:4222", want: []string{"nats://[::1]:4222"}},
		{give: "http://127.0.0.1:4222", wantErr: `scheme "http" is not one of nats, tls, ws, wss`},
		{give: "nats://a:1,https://u:pw-in-list@b:2", wantErr: `"https://b:2 (server 2 of 2)": scheme "https"`},
		{give: "", wantErr: "empty server URL"},
		{give: "nats://a:1,,nats://b:2", wantErr: "empty entry"},
		{give: "nats://:4222", wantErr: "has no host"},
		{give: "nats://h:99999", wantErr: `port "99999" is not in 1..65535`},
		{give: "nats://h:0", wantErr: `port "0"`},
		{give: "nats://u:pw-bad@h:x", wantErr: `"nats://h:x" is not a URL`},
		{give: "ws://a:1,nats://b:2", wantErr: "cannot be mixed"},
	}
	for _, tt := range tests {
		got, err := bus.ParseServers(tt.give)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, bus.ErrInvalidOption) {
				t.Errorf("ParseServers(%q): got %v, want an ErrInvalidOption containing %q", tt.give, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "pw-") {
				t.Errorf("ParseServers(%q): error shows the password: %v", tt.give, err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("ParseServers(%q) = %q, %v; want %q", tt.give, got, err, tt.want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ give, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://alice:pw@h:1", "nats://h:1"},
		{"nats://s3cr3t-token@h:1", "nats://h:1"},
		{"nats://a:p@h:1,tls://b:q@k:2", "nats://h:1,tls://k:2"},
		{"alice:pw@h:1", "h:1"},
		{"nats://a:p@h:bad", "nats://h:bad"},       // does not parse: still cleaned
		{"nats://a:p@w@h:1", "nats://h:1"},         // '@' in the password
		{"ws://a:p@h:1/path@x", "ws://h:1/path@x"}, // '@' in the path stays
		{"", ""},
	}
	for _, tt := range tests {
		if got := bus.RedactURL(tt.give); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}
