package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/pipeline"
)

// loaded is a config file as read: the config, a hash of its bytes and
// when it was read.
type loaded struct {
	cfg  *config.Config
	hash string // "" for the built-in defaults
	at   time.Time
}

// load reads and validates the config file at path ("" gives the built-in
// defaults). Problems in the file wrap config.ErrInvalid and read
// "FILE:LINE: key: reason".
func load(path string) (*loaded, error) {
	if path == "" {
		return &loaded{cfg: config.Default(), at: time.Now()}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := config.Parse(path, data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	return &loaded{cfg: cfg, hash: hex.EncodeToString(sum[:6]), at: time.Now()}, nil
}

// Check validates the config file at path as a start would, without
// connecting anywhere: the file itself, the reply subjects, and building
// its backends and routes (token files read, schemas compiled). It returns
// the config hash ("" for no file).
func Check(path string) (string, error) {
	ld, err := load(path)
	if err != nil {
		return "", err
	}
	if _, err := pipeline.ReplyRules(topologyOf(ld.cfg), ld.cfg.Worker.ReplySubjects); err != nil {
		return "", fmt.Errorf("%s: worker.reply_subjects: %w", path, err)
	}
	bk, err := Build(ld.cfg, nil, discardLogger(), Observers{}, nil)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	bk.Close()
	return ld.hash, nil
}

// healthSettings are the health monitor's settings a config gives.
func healthSettings(cfg *config.Config, nc *nats.Conn, bk *Backends) health.Settings {
	return health.Settings{
		Backends: bk.Names(), Probes: probes(cfg, nc),
		SLATarget: cfg.Health.SLATarget, BreakerOpenAlertAfter: cfg.Health.BreakerOpenAlertAfter.D(),
	}
}

// restartOnly are the config sections and keys a running worker cannot
// change: its connection, its streams and consumer, the pipeline's size,
// the DLQ writer and the heartbeat interval (peers judge staleness by it).
var restartOnly = []string{"prefix", "nats", "streams", "worker.concurrency", "worker.ack_wait",
	"worker.max_deliver", "worker.max_payload", "dlq", "health.interval"}

// needsRestart names the keys of restartOnly (down to their leaves) whose
// values differ between running and next.
func needsRestart(running, next *config.Config) []string {
	var keys []string
	for _, key := range restartOnly {
		keys = append(keys, diffKeys(key, field(running, key), field(next, key))...)
	}
	return keys
}

// field is the value of the dotted yaml key path in cfg.
func field(cfg *config.Config, path string) reflect.Value {
	v := reflect.ValueOf(*cfg)
	for _, name := range strings.Split(path, ".") {
		v = byTag(v, name)
	}
	return v
}

func byTag(v reflect.Value, name string) reflect.Value {
	for i := range v.NumField() {
		if strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0] == name {
			return v.Field(i)
		}
	}
	panic("service: no config key " + name) // restartOnly names a key that is gone
}

// diffKeys names the leaves under key where a and b differ.
func diffKeys(key string, a, b reflect.Value) []string {
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		return nil
	}
	if a.Kind() != reflect.Struct {
		return []string{key}
	}
	var keys []string
	for i := range a.NumField() {
		tag := strings.Split(a.Type().Field(i).Tag.Get("yaml"), ",")[0]
		keys = append(keys, diffKeys(key+"."+tag, a.Field(i), b.Field(i))...)
	}
	return keys
}

// Reload loads the config file again and, if it is valid, replaces the
// routes, backends, policies, cache, health settings and reply subjects
// for the tasks that start after it (see the package doc). A bad file
// changes nothing. Either way it logs one line and counts the result in
// breakwater_config_reloads_total; it returns the error that refused the
// file. Safe for concurrent use (reloads run one at a time).
func (s *worker) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.reload(ctx)
	result := "ok"
	if err != nil {
		result = "error"
		s.log.Error("config reload refused; the previous config stays", "file", s.path, "err", err)
	}
	if s.reloads != nil {
		s.reloads.Add(context.Background(), 1, metric.WithAttributes(attribute.String("result", result)))
	}
	return err
}

func (s *worker) reload(ctx context.Context) error {
	ld, err := load(s.path)
	if err != nil {
		return err
	}
	cfg := ld.cfg
	// Check everything before changing anything.
	reply, err := pipeline.ReplyRules(s.topo, cfg.Worker.ReplySubjects)
	if err != nil {
		return fmt.Errorf("%s: worker.reply_subjects: %w", s.path, err)
	}
	hs := health.Settings{SLATarget: cfg.Health.SLATarget}
	if hs.SLATarget < 0 || hs.SLATarget > 100 {
		return fmt.Errorf("%s: health.sla_target: %v is not a percentage", s.path, hs.SLATarget)
	}
	bk, err := Build(cfg, s.nc, s.log, s.obs, s.bk)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	cs := cacheSettingsOf(cfg)
	oldCache := s.probe.cache.Load()
	newCache := oldCache
	if !cs.sameCache(s.cacheSet) || (oldCache == nil) != (len(cs.policies) == 0) {
		if newCache, err = buildCache(ctx, cs, s.js, s.topo, s.log); err != nil {
			bk.Release(s.bk)
			return fmt.Errorf("%s: cache: %w", s.path, err)
		}
	}

	// Valid: apply. Nothing below can fail but the admin service restart,
	// which only its metadata depends on.
	old := s.bk
	added, kept, removed := old.diff(bk)
	// The tasks running on the old config release what only it has once
	// they are done (and the tasks of the configs before it, which may
	// use a backend carried over).
	s.current.release = func() {
		old.Release(bk)
		if oldCache != nil && oldCache != newCache {
			_ = oldCache.Close()
		}
	}
	next := newRetirement(s.current)
	if err := s.w.SetLive(pipeline.Live{Router: bk.Router, Reply: reply, Cache: newCache,
		CachePolicies: cs.policies, Retired: next.retired}); err != nil {
		s.current.release = nil
		bk.Release(old)
		if newCache != oldCache {
			_ = newCache.Close()
		}
		return err
	}
	s.bk, s.cacheSet, s.current = bk, cs, next
	s.probe.cache.Store(newCache)
	s.probe.targets.Store(&bk.Targets)
	_ = s.monitor.Reconfigure(healthSettings(cfg, s.nc, bk))
	// A backend built anew starts with a closed breaker: say so, or
	// health would go on showing the old one's state.
	for _, name := range added {
		if t := bk.Targets[name]; t.Breaker() != nil {
			b := t.Breaker()
			s.monitor.BreakerChanged(name, health.BreakerState(b.State()))
		}
	}
	s.probe.loaded.Store(ld)
	restart := needsRestart(s.running, cfg)
	if err := s.restartAdmin(); err != nil {
		s.log.Warn("admin service not restarted with the new config's metadata", "err", err)
	}
	s.log.Info("config reloaded", "file", s.path, "config_hash", ld.hash, "routes", len(cfg.Routes),
		"backends_added", added, "backends_removed", removed, "backends_kept", kept)
	if len(restart) > 0 {
		s.log.Warn("config reload: these settings need a restart and keep their running values",
			"file", s.path, "settings", strings.Join(restart, ", "))
	}
	return nil
}

// retirement is what one config's tasks used and the next config does
// not: its release runs once those tasks are done, and after the
// retirement of the config before it.
type retirement struct {
	prev *retirement
	done chan struct{}
	// release is set by the reload that replaces the config, before the
	// swap (pipeline.SetLive orders it before retired); nil: nothing.
	release func()
}

func newRetirement(prev *retirement) *retirement {
	return &retirement{prev: prev, done: make(chan struct{})}
}

// retired is the config's pipeline.Live.Retired.
func (r *retirement) retired() {
	if r.prev != nil {
		<-r.prev.done
	}
	if r.release != nil {
		r.release()
	}
	close(r.done)
}

// adminService is the admin plane's micro service, restarted when a
// reload changes the metadata it shows in $SRV.INFO.
type adminService struct {
	svc micro.Service
}

func (s *worker) adminOptions() health.AdminOptions {
	ld := s.probe.loaded.Load()
	md := map[string]string{"version": s.o.Version.String()}
	if ld.hash != "" {
		md["config_hash"] = ld.hash
		md["config_loaded_at"] = ld.at.UTC().Format(time.RFC3339)
	}
	return health.AdminOptions{
		Conn: s.nc, Monitor: s.monitor, WorkerID: s.o.WorkerID, Version: s.o.Version.Semver(),
		Control: s.ctrl, Tasks: s.w, Subject: health.AdminSubject(s.topo.Prefix), Metadata: md,
	}
}

func (s *worker) startAdmin() error {
	svc, err := health.StartAdmin(s.adminOptions())
	if err != nil {
		return err
	}
	s.admin.svc = svc
	return nil
}

func (s *worker) stopAdmin() {
	if s.admin.svc != nil {
		_ = s.admin.svc.Stop()
		s.admin.svc = nil
	}
}

// restartAdmin registers the admin service again: micro has no way to
// change a running service's metadata. Requests in the moment between go
// unanswered, as they would while a worker restarts.
func (s *worker) restartAdmin() error {
	s.stopAdmin()
	return s.startAdmin()
}

// topologyOf is the streams and subjects a config names.
func topologyOf(cfg *config.Config) bus.Topology {
	return bus.Topology{
		Prefix:        cfg.Prefix,
		Replicas:      cfg.Streams.Replicas,
		ResultsMaxAge: cfg.Streams.ResultsMaxAge.D(),
		DLQMaxBytes:   int64(cfg.Streams.DLQMaxBytes),
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
