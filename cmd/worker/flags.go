package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/breakwater/breakwater/internal/cliflag"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/config"
)

// errHelp is returned by parseFlags after printing the usage for --help.
var errHelp = errors.New("help requested")

// flags are the worker's command line (see the contract's Commands).
type flags struct {
	config                 string
	embedded               string // store directory; "" when not embedded
	embeddedSync           string // always | interval
	natsURL                string // "" when neither --nats-url nor NATS_URL is set
	httpAddr               string
	logLevel               string
	logFormat              string
	id                     string
	creds, nkey            string
	user, password, token  string
	tlsCA, tlsCert, tlsKey string
}

const defaultEmbeddedDir = "./data"

const usageLine = "Usage: worker [--config FILE] [--embedded [DIR]] [--nats-url URL] [--http ADDR] [flags]\n\n"

func parseFlags(args []string, getenv func(string) string, stdout io.Writer) (*flags, error) {
	var f flags
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.config, "config", "", "YAML configuration `file` (default: built-in handlers only)")
	fs.StringVar(&f.embedded, "embedded", "", "start an in-process NATS server with its store in `[DIR]` (--embedded DIR or --embedded=DIR; alone: "+defaultEmbeddedDir+")")
	fs.StringVar(&f.embeddedSync, "embedded-fsync", "always", "embedded server fsync: always (every write) or interval (server default, faster, may lose recent writes on power loss)")
	fs.StringVar(&f.natsURL, "nats-url", "", "NATS server `URL`s, comma separated (else $NATS_URL, else the config, else "+bus.DefaultURL+"); with --embedded, the address to listen at")
	fs.StringVar(&f.httpAddr, "http", "", "serve /healthz, /readyz and /metrics (Prometheus) at `ADDR` (e.g. :8080)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&f.id, "id", "", "worker `ID` in DLQ entries and health events (default host-pid)")
	// Credentials: flag, else the nats CLI's variable, else the config.
	fs.StringVar(&f.creds, "creds", "", "NATS credentials `file` (else $NATS_CREDS, else nats.creds)")
	fs.StringVar(&f.nkey, "nkey", "", "NATS nkey user seed `file` (else $NATS_NKEY)")
	fs.StringVar(&f.user, "user", "", "NATS user (else $NATS_USER, else nats.user)")
	fs.StringVar(&f.password, "password", "", "NATS password; prefer $NATS_PASSWORD, which ps does not show (else nats.password)")
	fs.StringVar(&f.token, "token", "", "NATS token; prefer $NATS_TOKEN, which ps does not show (else nats.token)")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM `file` of CAs to trust (else $NATS_CA, else nats.tls.ca)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "client certificate PEM `file` (else $NATS_CERT, else nats.tls.cert)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "client key PEM `file` (else $NATS_KEY, else nats.tls.key)")
	help := fs.BoolP("help", "h", false, "show this help")
	cliflag.PlainBools(fs)
	if err := fs.Parse(embeddedDirArg(fs, args)); err != nil {
		return nil, err
	}
	if *help {
		fmt.Fprintf(stdout, "%s%s", usageLine, fs.FlagUsages())
		return nil, errHelp
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if f.natsURL == "" {
		f.natsURL = getenv("NATS_URL")
	}
	if f.natsURL != "" {
		// A wrong scheme would otherwise be retried forever.
		if _, err := bus.ParseServers(f.natsURL); err != nil {
			return nil, fmt.Errorf("--nats-url: %w", err)
		}
	}
	switch f.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", f.logLevel)
	}
	switch f.logFormat {
	case "json", "text":
	default:
		return nil, fmt.Errorf("invalid --log-format %q: want json or text", f.logFormat)
	}
	switch f.embeddedSync {
	case "always", "interval":
	default:
		return nil, fmt.Errorf("invalid --embedded-fsync %q: want always or interval", f.embeddedSync)
	}
	if fs.Changed("embedded") && strings.TrimSpace(f.embedded) == "" {
		return nil, errors.New("--embedded needs a directory")
	}
	return &f, nil
}

// embeddedDirArg rewrites the optional value of --embedded so pflag can
// parse it: "--embedded DIR" becomes "--embedded=DIR" and a lone
// "--embedded" (last, or followed by a flag) "--embedded=./data". pflag's
// own optional values only take the "=DIR" form, and the worker has no
// positional arguments, so a word after --embedded can only be its DIR.
// Values of other flags ("--config --embedded") are left alone, as is
// everything after "--".
func embeddedDirArg(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if a == "--embedded" {
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				out = append(out, "--embedded="+args[i+1])
				i++
			} else {
				out = append(out, "--embedded="+defaultEmbeddedDir)
			}
			continue
		}
		out = append(out, a)
		// "--name value": keep the value with its flag.
		if name, ok := strings.CutPrefix(a, "--"); ok && !strings.Contains(name, "=") {
			if fl := fs.Lookup(name); fl != nil && fl.NoOptDefVal == "" && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
		}
	}
	return out
}

// connectOptions are the NATS connection settings: each one from its flag,
// else from the nats CLI's environment variable, else from the config
// file. NATS_URL is already in f.natsURL.
func connectOptions(f *flags, getenv func(string) string, file config.NATS) bus.ConnectOptions {
	fromFlags := bus.ConnectOptions{
		URL: f.natsURL, Creds: f.creds, NKey: f.nkey, User: f.user, Password: f.password, Token: f.token,
		TLSCA: f.tlsCA, TLSCert: f.tlsCert, TLSKey: f.tlsKey,
	}
	fromFile := bus.ConnectOptions{
		URL: file.URL, Creds: file.Creds, User: file.User, Password: file.Password, Token: file.Token,
		TLSCA: file.TLS.CA, TLSCert: file.TLS.Cert, TLSKey: file.TLS.Key,
	}
	return fromFlags.Or(bus.EnvOptions(getenv)).Or(fromFile).Or(bus.ConnectOptions{URL: bus.DefaultURL})
}
