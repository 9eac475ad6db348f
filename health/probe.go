package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/nats-io/nats.go"
)

// HTTPProbe GETs rawURL: any 2xx or 3xx answer is up.
func HTTPProbe(client *http.Client, rawURL string) ProbeFunc {
	if client == nil {
		client = http.DefaultClient
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			// Not the URL: it may carry a token, and the reason is
			// published in health events.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return fmt.Errorf("probe: %w", err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if resp.StatusCode >= 400 {
			return fmt.Errorf("probe: status %d", resp.StatusCode)
		}
		return nil
	}
}

// NATSProbe sends an empty request to subject: any reply but a 5xx
// service error is up (a 4xx says the service is there and refused the
// empty request); no responders or a timeout is down.
func NATSProbe(nc *nats.Conn, subject string) ProbeFunc {
	return func(ctx context.Context) error {
		msg := &nats.Msg{Subject: subject, Header: nats.Header{"Breakwater-Probe": {"1"}}}
		reply, err := nc.RequestMsgWithContext(ctx, msg)
		if err != nil {
			return fmt.Errorf("probe %s: %w", subject, err)
		}
		if code := reply.Header.Get("Nats-Service-Error-Code"); len(code) == 3 && code[0] == '5' {
			return fmt.Errorf("probe %s: service error %s", subject, code)
		}
		return nil
	}
}
