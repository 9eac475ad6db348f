package service

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/pipeline"
)

// setup creates or updates the streams and the shared consumer, retrying
// while the server has no JetStream leader yet (a cluster starting up).
func setup(ctx context.Context, js jetstream.JetStream, topo bus.Topology, cfg *config.Config, log *slog.Logger) (jetstream.Consumer, error) {
	var lastErr error
	for attempt := 0; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := bus.EnsureStreams(sctx, js, topo)
		var c jetstream.Consumer
		if err == nil {
			c, err = bus.EnsureConsumer(sctx, js, topo, bus.ConsumerOptions{
				AckWait: cfg.Worker.AckWait.D(), MaxDeliver: pipeline.ConsumerMaxDeliver(cfg.Worker.MaxDeliver),
			})
		}
		cancel()
		if err == nil {
			return c, nil
		}
		if errors.Is(err, bus.ErrStreamMismatch) || errors.Is(err, ctx.Err()) && ctx.Err() != nil || refused(err) {
			return nil, err
		}
		if lastErr == nil || lastErr.Error() != err.Error() {
			log.Warn("streams not ready; retrying", "err", err)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(time.Duration(attempt+1)*250*time.Millisecond, 5*time.Second)):
		}
	}
}

// refused reports a request the server refused as malformed (a bad stream
// name, a bad setting): trying again cannot help. Races between workers
// starting at once (a stream or consumer made meanwhile) are retried.
func refused(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 400 {
		return false
	}
	switch apiErr.ErrorCode {
	case 10058, 10013, 10148, 10149: // stream/consumer name exists, consumer exists / does not exist
		return false
	}
	return true
}
