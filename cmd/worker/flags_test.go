package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/internal/version"
)

func TestParseFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name         string
		give         []string
		env          map[string]string
		wantEmbedded string
		wantURL      string
		wantErr      string
	}{
		{name: "embedded default dir", give: []string{"--embedded"}, wantEmbedded: "./data"},
		{name: "embedded dir", give: []string{"--embedded=/tmp/x"}, wantEmbedded: "/tmp/x"},
		{name: "embedded space dir", give: []string{"--embedded", "/tmp/x"}, wantEmbedded: "/tmp/x"},
		{name: "embedded relative dir", give: []string{"--embedded", "store", "--log-level", "debug"}, wantEmbedded: "store"},
		{name: "embedded then flag", give: []string{"--embedded", "--nats-url", "nats://b:2"}, wantEmbedded: "./data", wantURL: "nats://b:2"},
		{name: "embedded then bool flag", give: []string{"--embedded", "-h"}, wantErr: errHelp.Error()},
		{name: "flag then embedded dir", give: []string{"--nats-url", "127.0.0.1:5222", "--embedded", "/tmp/y"}, wantEmbedded: "/tmp/y", wantURL: "127.0.0.1:5222"},
		{name: "embedded last", give: []string{"--http", ":8080", "--embedded"}, wantEmbedded: "./data"},
		{name: "embedded as another flag's value", give: []string{"--id", "--embedded"}, wantEmbedded: ""},
		{name: "embedded after --", give: []string{"--", "--embedded"}, wantErr: `unexpected argument "--embedded"`},
		{name: "embedded empty", give: []string{"--embedded="}, wantErr: "--embedded needs a directory"},
		{name: "embedded dir and a stray word", give: []string{"--embedded", "/tmp/x", "run"}, wantErr: `unexpected argument "run"`},
		{name: "wrong scheme", give: []string{"--nats-url", "http://127.0.0.1:4222"}, wantErr: `--nats-url: invalid connect option: server URL "http://127.0.0.1:4222": scheme "http" is not one of nats, tls, ws, wss`},
		{name: "wrong scheme in NATS_URL", env: map[string]string{"NATS_URL": "https://a:1"}, wantErr: `scheme "https"`},
		{name: "wrong scheme in a list", give: []string{"--nats-url", "nats://a:1,http://b:2"}, wantErr: `(server 2 of 2)`},
		{name: "server list", give: []string{"--nats-url", "nats://a:1,b:2"}, wantURL: "nats://a:1,b:2"},
		{name: "NATS_URL", env: map[string]string{"NATS_URL": "nats://a:1"}, wantURL: "nats://a:1"},
		{name: "flag beats NATS_URL", give: []string{"--nats-url", "nats://b:2"}, env: map[string]string{"NATS_URL": "nats://a:1"}, wantURL: "nats://b:2"},
		{name: "unknown flag", give: []string{"--bogus"}, wantErr: "unknown flag: --bogus"},
		{name: "stray argument", give: []string{"run"}, wantErr: `unexpected argument "run"`},
		{name: "bad log level", give: []string{"--log-level", "loud"}, wantErr: "invalid --log-level"},
		{name: "bad fsync", give: []string{"--embedded-fsync", "never"}, wantErr: "invalid --embedded-fsync"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseFlags(tt.give, env(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.embedded != tt.wantEmbedded || f.natsURL != tt.wantURL {
				t.Errorf("got embedded %q url %q, want %q %q", f.embedded, f.natsURL, tt.wantEmbedded, tt.wantURL)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		give []string
		want int
	}{
		{[]string{"--help"}, exitOK},
		{[]string{"--bogus"}, exitUsage},
		{[]string{"--config", "/nonexistent/worker.yaml"}, exitError},
		{[]string{"--nats-url", "http://127.0.0.1:4222"}, exitUsage},
		{[]string{"--nats-url", "nats://u:pw-Zz91@127.0.0.1:1", "--tls-cert", "c.pem"}, exitUsage},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		got := run(context.Background(), tt.give, func(string) string { return "" }, &bytes.Buffer{}, &stderr)
		if got != tt.want {
			t.Errorf("run(%q) = %d, want %d (stderr %q)", tt.give, got, tt.want, stderr.String())
		}
		if tt.want != exitOK && strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("run(%q) stderr is not one line: %q", tt.give, stderr.String())
		}
		if strings.Contains(stderr.String(), "pw-Zz91") {
			t.Errorf("run(%q) stderr shows the password: %q", tt.give, stderr.String())
		}
	}
}

func TestHelpShowsEmbeddedDir(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, func(string) string { return "" }, &out); err != errHelp {
		t.Fatalf("got %v, want errHelp", err)
	}
	for _, want := range []string{"[--embedded [DIR]]", "--embedded [DIR]", "(--embedded DIR or --embedded=DIR; alone: ./data)", "--nkey file", "$NATS_PASSWORD"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help does not show %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), `[="./data"]`) {
		t.Errorf("help still shows pflag's [=\"./data\"] form:\n%s", out.String())
	}
	if strings.Contains(out.String(), "[=true|false]") {
		t.Errorf("help shows booleans as --flag[=true|false]:\n%s", out.String())
	}
}

// TestConnectOptionsPrecedence: for each setting a flag beats the nats
// CLI's variable, which beats the config file.
func TestConnectOptionsPrecedence(t *testing.T) {
	file := config.NATS{URL: "nats://file:1", Creds: "file.creds", User: "file-user", Password: "file-pw", Token: "file-tok",
		TLS: config.TLS{CA: "file-ca", Cert: "file-cert", Key: "file-key"}}
	allEnv := map[string]string{"NATS_USER": "env-user", "NATS_PASSWORD": "env-pw", "NATS_TOKEN": "env-tok",
		"NATS_CREDS": "env.creds", "NATS_NKEY": "env.nk", "NATS_CA": "env-ca", "NATS_CERT": "env-cert", "NATS_KEY": "env-key"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file config.NATS
		want bus.ConnectOptions
	}{
		{name: "nothing", want: bus.ConnectOptions{URL: bus.DefaultURL}},
		{name: "config file only", file: file, want: bus.ConnectOptions{URL: "nats://file:1", Creds: "file.creds",
			User: "file-user", Password: "file-pw", Token: "file-tok", TLSCA: "file-ca", TLSCert: "file-cert", TLSKey: "file-key"}},
		{name: "env beats file", env: allEnv, file: file, want: bus.ConnectOptions{URL: "nats://file:1", Creds: "env.creds",
			NKey: "env.nk", User: "env-user", Password: "env-pw", Token: "env-tok", TLSCA: "env-ca", TLSCert: "env-cert", TLSKey: "env-key"}},
		{name: "flags beat env and file",
			args: []string{"--nats-url", "nats://flag:1", "--creds", "flag.creds", "--nkey", "flag.nk", "--user", "flag-user",
				"--password", "flag-pw", "--token", "flag-tok", "--tls-ca", "flag-ca", "--tls-cert", "flag-cert", "--tls-key", "flag-key"},
			env: allEnv, file: file,
			want: bus.ConnectOptions{URL: "nats://flag:1", Creds: "flag.creds", NKey: "flag.nk", User: "flag-user",
				Password: "flag-pw", Token: "flag-tok", TLSCA: "flag-ca", TLSCert: "flag-cert", TLSKey: "flag-key"}},
		{name: "NATS_URL beats file", env: map[string]string{"NATS_URL": "nats://env:1"}, file: file,
			want: bus.ConnectOptions{URL: "nats://env:1", Creds: "file.creds", User: "file-user", Password: "file-pw",
				Token: "file-tok", TLSCA: "file-ca", TLSCert: "file-cert", TLSKey: "file-key"}},
		{name: "user in file, password from env", env: map[string]string{"NATS_PASSWORD": "env-pw"},
			file: config.NATS{User: "file-user"},
			want: bus.ConnectOptions{URL: bus.DefaultURL, User: "file-user", Password: "env-pw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			f, err := parseFlags(tt.args, getenv, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := connectOptions(f, getenv, tt.file); got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// --version and check-config answer without a server; check-config says
// "ok" or names the file, line and key.
func TestVersionAndCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("routes:\n  echo: {backends: [\"builtin:echo\"]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("routes:\n  echo:\n    backends: [\"builtin:echo\"]\n    deadline: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		give       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{give: []string{"--version"}, wantCode: exitOK, wantStdout: "worker " + version.Get().String() + "\n"},
		{give: []string{"check-config", good}, wantCode: exitOK, wantStdout: "ok\n"},
		{give: []string{"--config", good, "--check"}, wantCode: exitOK, wantStdout: "ok\n"},
		{give: []string{"check-config", bad}, wantCode: exitError, wantStderr: bad + ":4: routes.echo.deadline: "},
		{give: []string{"--check", "--config", bad}, wantCode: exitError, wantStderr: bad + ":4: routes.echo.deadline: "},
		{give: []string{"check-config", filepath.Join(dir, "missing.yaml")}, wantCode: exitError, wantStderr: "missing.yaml"},
		{give: []string{"check-config"}, wantCode: exitUsage, wantStderr: "want one FILE"},
		{give: []string{"--check"}, wantCode: exitUsage, wantStderr: "--check needs --config FILE"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := run(context.Background(), tt.give, func(string) string { return "" }, &stdout, &stderr)
			if got != tt.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", got, tt.wantCode, stderr.String())
			}
			if tt.wantStdout != "" && stdout.String() != tt.wantStdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
