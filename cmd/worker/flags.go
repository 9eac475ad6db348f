package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// errHelp is returned by parseFlags after printing the usage for --help.
var errHelp = errors.New("help requested")

// flags are the worker's command line (see the contract's Commands).
type flags struct {
	config                       string
	embedded                     string // store directory; "" when not embedded
	embeddedSync                 string // always | interval
	natsURL                      string // "" when neither --nats-url nor NATS_URL is set
	httpAddr                     string
	logLevel                     string
	logFormat                    string
	id                           string
	creds, user, password, token string
	tlsCA, tlsCert, tlsKey       string
}

const defaultEmbeddedDir = "./data"

func parseFlags(args []string, getenv func(string) string, stdout io.Writer) (*flags, error) {
	var f flags
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.config, "config", "", "YAML configuration `file` (default: built-in handlers only)")
	fs.StringVar(&f.embedded, "embedded", "", "start an in-process NATS server storing in `DIR` (default "+defaultEmbeddedDir+")")
	fs.Lookup("embedded").NoOptDefVal = defaultEmbeddedDir
	fs.StringVar(&f.embeddedSync, "embedded-fsync", "always", "embedded server fsync: always (every write) or interval (server default, faster, may lose recent writes on power loss)")
	fs.StringVar(&f.natsURL, "nats-url", "", "NATS server `URL` (else $NATS_URL, else the config, else nats://127.0.0.1:4222); with --embedded, the address to listen at")
	fs.StringVar(&f.httpAddr, "http", "", "serve /healthz, /readyz and /metrics (Prometheus) at `ADDR` (e.g. :8080)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&f.id, "id", "", "worker `ID` in DLQ entries and health events (default host-pid)")
	fs.StringVar(&f.creds, "creds", "", "NATS credentials `file`")
	fs.StringVar(&f.user, "user", "", "NATS user")
	fs.StringVar(&f.password, "password", "", "NATS password")
	fs.StringVar(&f.token, "token", "", "NATS token")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM `file` of CAs to trust")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "client certificate PEM `file`")
	fs.StringVar(&f.tlsKey, "tls-key", "", "client key PEM `file`")
	help := fs.BoolP("help", "h", false, "show this help")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *help {
		fmt.Fprintf(stdout, "Usage: worker [--config FILE] [--embedded[=DIR]] [--nats-url URL] [--http ADDR]\n\n%s", fs.FlagUsages())
		return nil, errHelp
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if f.natsURL == "" {
		f.natsURL = getenv("NATS_URL")
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
