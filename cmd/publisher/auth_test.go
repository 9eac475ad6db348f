package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/bus/bustest"
	"github.com/breakwater/breakwater/internal/testkit"
)

// natsEnv are the nats CLI variables the publisher reads; every test here
// starts from none of them set.
var natsEnv = []string{"NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY",
	"NATS_CA", "NATS_CERT", "NATS_KEY"}

func clearNATSEnv(t *testing.T) {
	for _, k := range natsEnv {
		t.Setenv(k, "")
	}
}

// startAuthServer starts a JetStream server requiring the auth of opts and
// creates the streams with good, a connection it accepts.
func startAuthServer(t *testing.T, opts *server.Options, good bus.ConnectOptions) string {
	t.Helper()
	good.URL = testkit.StartServer(t, testkit.Base(opts)).URL()
	if opts.TLS {
		good.URL = strings.Replace(good.URL, "nats://", "tls://", 1)
	}
	good.Logger = slog.New(slog.DiscardHandler)
	nc, err := bus.Connect(t.Context(), good)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := bus.EnsureStreams(t.Context(), testkit.JetStream(t, nc), bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	return good.URL
}

// TestAuthMethods publishes a task with every auth method, given as flags
// and as the nats CLI's environment variables, and checks that wrong
// credentials fail at once in one line that shows no secret.
func TestAuthMethods(t *testing.T) {
	nk, otherNK := bustest.NewNKeyUser(t), bustest.NewNKeyUser(t)
	op, otherOp := bustest.NewOperator(t), bustest.NewOperator(t)
	certs := bustest.NewTLS(t)
	tlsConf, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CaFile: certs.CA, Verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	operatorOpts := func() *server.Options {
		r := &server.MemAccResolver{}
		_ = r.Store(op.SystemPub, op.SystemJWT)
		_ = r.Store(op.AccountPub, op.AccountJWT)
		return &server.Options{TrustedOperators: []*jwt.OperatorClaims{op.Claims}, AccountResolver: r, SystemAccount: op.SystemPub}
	}
	tests := []struct {
		name    string
		server  *server.Options
		good    bus.ConnectOptions // for the test's own setup
		flags   []string
		env     map[string]string
		badFlag []string
		badEnv  map[string]string
		want    string // in the error of the bad ones
		secrets []string
	}{
		{
			name:    "user and password",
			server:  &server.Options{Users: []*server.User{{Username: "alice", Password: "pub-pw-Lm42"}}},
			good:    bus.ConnectOptions{User: "alice", Password: "pub-pw-Lm42"},
			flags:   []string{"--user", "alice", "--password", "pub-pw-Lm42"},
			env:     map[string]string{"NATS_USER": "alice", "NATS_PASSWORD": "pub-pw-Lm42"},
			badFlag: []string{"--user", "alice", "--password", "pub-bad-Rr17"},
			badEnv:  map[string]string{"NATS_USER": "alice", "NATS_PASSWORD": "pub-bad-Rr17"},
			want:    "nats: Authorization Violation",
			secrets: []string{"pub-pw-Lm42", "pub-bad-Rr17"},
		},
		{
			name:    "token",
			server:  &server.Options{Authorization: "pub-tok-Gg55"},
			good:    bus.ConnectOptions{Token: "pub-tok-Gg55"},
			flags:   []string{"--token", "pub-tok-Gg55"},
			env:     map[string]string{"NATS_TOKEN": "pub-tok-Gg55"},
			badFlag: []string{"--token", "pub-tok-bad-Yy"},
			badEnv:  map[string]string{"NATS_TOKEN": "pub-tok-bad-Yy"},
			want:    "nats: Authorization Violation",
			secrets: []string{"pub-tok-Gg55", "pub-tok-bad-Yy"},
		},
		{
			name:    "nkey",
			server:  &server.Options{Nkeys: []*server.NkeyUser{{Nkey: nk.Public}}},
			good:    bus.ConnectOptions{NKey: nk.SeedFile},
			flags:   []string{"--nkey", nk.SeedFile},
			env:     map[string]string{"NATS_NKEY": nk.SeedFile},
			badFlag: []string{"--nkey", otherNK.SeedFile},
			badEnv:  map[string]string{"NATS_NKEY": otherNK.SeedFile},
			want:    "nats: Authorization Violation",
		},
		{
			name:    "creds",
			server:  operatorOpts(),
			good:    bus.ConnectOptions{Creds: op.CredsFile},
			flags:   []string{"--creds", op.CredsFile},
			env:     map[string]string{"NATS_CREDS": op.CredsFile},
			badFlag: []string{"--creds", otherOp.CredsFile},
			badEnv:  map[string]string{"NATS_CREDS": otherOp.CredsFile},
			want:    "nats: Authorization Violation",
		},
		{
			name:    "TLS client certificate",
			server:  &server.Options{TLSConfig: tlsConf, TLS: true, TLSVerify: true},
			good:    bus.ConnectOptions{TLSCA: certs.CA, TLSCert: certs.ClientCert, TLSKey: certs.ClientKey},
			flags:   []string{"--tls-ca", certs.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey},
			env:     map[string]string{"NATS_CA": certs.CA, "NATS_CERT": certs.ClientCert, "NATS_KEY": certs.ClientKey},
			badFlag: []string{"--tls-ca", certs.CA},
			badEnv:  map[string]string{"NATS_CA": certs.OtherCA, "NATS_CERT": certs.ClientCert, "NATS_KEY": certs.ClientKey},
			want:    "connect to tls://127.0.0.1:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearNATSEnv(t)
			url := startAuthServer(t, tt.server, tt.good)
			publish := func(extra ...string) result {
				return runCmd(t, "", append([]string{"publish", "echo", "hi", "--timeout", "10s", "--nats-url", url}, extra...)...)
			}
			setEnv := func(env map[string]string) {
				for _, k := range natsEnv {
					t.Setenv(k, env[k])
				}
			}

			r := publish(tt.flags...)
			wantOK(t, r)
			if strings.TrimSpace(r.stdout) == "" {
				t.Errorf("flags: no task id printed")
			}
			setEnv(tt.env)
			wantOK(t, publish())
			setEnv(nil)

			start := time.Now()
			r = publish(tt.badFlag...)
			wantFail(t, r, exitFailure, tt.want)
			noSecret(t, r.stderr, tt.secrets)
			setEnv(tt.badEnv)
			r = publish()
			wantFail(t, r, exitFailure, tt.want)
			noSecret(t, r.stderr, tt.secrets)
			// A refusal is final for a command line tool: no retrying
			// until --timeout.
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("two refused publishes took %s", d)
			}

			// A flag beats its environment variable.
			wantOK(t, publish(tt.flags...))
		})
	}
}

func noSecret(t *testing.T, stderr string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(stderr, s) {
			t.Errorf("stderr shows the secret %q: %q", s, stderr)
		}
	}
}

// TestSecretsNotShown: a refused connection with the secret in the URL's
// user info, in --password or in --token prints neither it nor the user.
func TestSecretsNotShown(t *testing.T) {
	clearNATSEnv(t)
	url := startAuthServer(t, &server.Options{Users: []*server.User{{Username: "alice", Password: "right-Qa11"}}},
		bus.ConnectOptions{User: "alice", Password: "right-Qa11"})
	host := strings.TrimPrefix(url, "nats://")
	const secret = "S3cr3t-Vv90"
	tests := [][]string{
		{"--nats-url", "nats://alice:" + secret + "@" + host},
		{"--nats-url", "nats://" + secret + "@" + host},
		{"--nats-url", "nats://alice:" + secret + "@127.0.0.1:1," + url},
		{"--nats-url", url, "--user", "alice", "--password", secret},
		{"--nats-url", url, "--token", secret},
		{"--nats-url", "http://alice:" + secret + "@" + host}, // refused before connecting
	}
	for _, args := range tests {
		r := runCmd(t, "", append([]string{"publish", "echo", "hi", "--timeout", "10s"}, args...)...)
		if r.code == exitOK {
			t.Errorf("%q: exit 0, want a refusal", args)
		}
		if strings.Contains(r.stderr, secret) || strings.Contains(r.stderr, "alice") {
			t.Errorf("%q: stderr shows the secret or the user: %q", args, r.stderr)
		}
	}
}

func TestWrongSchemeRefused(t *testing.T) {
	clearNATSEnv(t)
	for _, cmd := range [][]string{{"publish", "echo", "hi"}, {"results"}, {"dlq", "list"}, {"health"}} {
		r := runCmd(t, "", append(cmd, "--nats-url", "http://127.0.0.1:4222")...)
		wantFail(t, r, exitUsage, `scheme "http" is not one of nats, tls, ws, wss`)
	}
	t.Setenv("NATS_URL", "https://127.0.0.1:4222")
	wantFail(t, runCmd(t, "", "publish", "echo", "hi"), exitUsage, `scheme "https"`)
}

// TestSeveralServers: a comma-separated --nats-url with a dead server
// first still publishes.
func TestSeveralServers(t *testing.T) {
	clearNATSEnv(t)
	e := startServer(t)
	for _, urls := range []string{unreachable + "," + e.url, strings.TrimPrefix(e.url, "nats://") + "," + unreachable} {
		wantOK(t, runCmd(t, "", "publish", "echo", "hi", "--nats-url", urls))
	}
	t.Setenv("NATS_URL", unreachable+","+e.url)
	wantOK(t, runCmd(t, "", "publish", "echo", "hi"))
}
