package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// scrapeFamilies fetches a worker's /metrics and parses it as Prometheus
// would, failing on anything it would refuse.
func scrapeFamilies(t *testing.T, w *worker) map[string]*dto.MetricFamily {
	t.Helper()
	b := scrape(t, "http://"+w.httpAddr+"/metrics")
	tp := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := tp.TextToMetricFamilies(strings.NewReader(b))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, b)
	}
	return mfs
}

// family finds the family a PromQL metric name reads: a histogram's
// _bucket, _count and _sum are series of the histogram.
func family(mfs map[string]*dto.MetricFamily, name string) (*dto.MetricFamily, bool) {
	if mf, ok := mfs[name]; ok {
		return mf, true
	}
	for _, suf := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if mf, ok := mfs[base]; ok && mf.GetType() == dto.MetricType_HISTOGRAM {
				return mf, true
			}
		}
	}
	return nil, false
}

// hasLabel reports whether some series of mf (read as name) has label l.
func hasLabel(mf *dto.MetricFamily, name, l string) bool {
	if l == "le" && strings.HasSuffix(name, "_bucket") {
		return true
	}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == l {
				return true
			}
		}
	}
	return false
}

// checkQuery parses expr and checks every metric it selects against the
// scrape: the metric exists, and so do the labels it matches on and
// aggregates by.
func checkQuery(t *testing.T, where, expr string, mfs map[string]*dto.MetricFamily) {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	e, err := p.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return
	}
	parser.Inspect(e, func(n parser.Node, path []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		mf, ok := family(mfs, vs.Name)
		if !ok {
			t.Errorf("%s: queries %s, which the worker does not export", where, vs.Name)
			return nil
		}
		labels := []string{}
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel {
				labels = append(labels, m.Name)
			}
		}
		for _, a := range path {
			if agg, ok := a.(*parser.AggregateExpr); ok && !agg.Without {
				labels = append(labels, agg.Grouping...)
			}
		}
		for _, l := range labels {
			if !hasLabel(mf, vs.Name, l) {
				t.Errorf("%s: uses label %q of %s, which no exported series has", where, l, vs.Name)
			}
		}
		return nil
	})
}

// grafanaVars are the dashboard's Grafana variables, as Grafana expands
// them before the query reaches Prometheus.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h")

// readmeMetrics are the metrics the README's Observability section lists,
// with the labels it names ("breakwater_tasks_total{outcome}"), braces of
// alternatives expanded ("breakwater_cache_{hits,misses}_total").
func readmeMetrics(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "- **Metrics**")
	if !ok {
		t.Fatal("README has no **Metrics** item")
	}
	section, _, _ := strings.Cut(rest, "\n- **")
	out := map[string][]string{}
	re := regexp.MustCompile("`(breakwater_[a-z_]*)(?:\\{([a-z_,]+)\\}([a-z_]*))?`")
	for _, m := range re.FindAllStringSubmatch(section, -1) {
		name, braces, suffix := m[1], m[2], m[3]
		switch {
		case braces == "":
			out[name] = nil
		case strings.HasSuffix(name, "_"): // alternatives
			for _, alt := range strings.Split(braces, ",") {
				out[name+alt+suffix] = nil
			}
		default: // labels
			out[name] = strings.Split(braces, ",")
		}
	}
	if len(out) < 10 {
		t.Fatalf("found %d metrics in the README's Metrics item, want the dozen it lists: %v", len(out), out)
	}
	return out
}

// TestMetricsOfDashboardAndAlerts runs a workload through a worker with an
// HTTP backend and a cached route, and checks against its /metrics that
// every metric the README lists is exported from the start, with its labels,
// and that every metric and label the Grafana dashboard's panels and the
// Prometheus alert rules query exists.
func TestMetricsOfDashboardAndAlerts(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = rw.Write(b)
	}))
	t.Cleanup(srv.Close)
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", fmt.Sprintf(`backends:
  flow:
    http: {url: %q}
    timeout: 5s
    retry: {max_attempts: 2, backoff: 10ms, budget: 0.5}  # retry_budget_remaining exists for backends with one
    breaker: {failure_threshold: 3, delay: 10s}  # breaker_state exists for backends with one
    max_concurrency: 20                          # concurrency_limit exists for bounded backends
routes:
  ops: {backends: [flow], cache: {ttl: 1m}}
`, srv.URL+"/run"))
	w := startWorker(t, s, "--config", cfg)

	// From the start, before any task.
	mfs := scrapeFamilies(t, w)
	for name, labels := range readmeMetrics(t) {
		mf, ok := family(mfs, name)
		if !ok {
			t.Errorf("README lists %s, which the worker does not export before its first task", name)
			continue
		}
		for _, l := range labels {
			if !hasLabel(mf, name, l) {
				t.Errorf("README lists %s{%s}; before the first task it has no series with label %s", name, strings.Join(labels, ","), l)
			}
		}
	}

	// A workload: misses, then hits of the result cache, and poison.
	c := connect(t, s)
	const n = 10
	for round := range 2 {
		for i := range n {
			c.publishTask("ops", fmt.Sprintf("r%d-%d", round, i), []byte(fmt.Sprintf(`{"n":%d}`, i)))
		}
		c.waitSubjects("RESULTS", "results.ops.*", (round+1)*n, resultTimeout)
	}
	c.publishTask("ops", "", []byte("x"), "Task-Id", "not a token")
	c.lastMsg("DLQ", "dlq.ops", resultTimeout)
	mfs = scrapeFamilies(t, w)

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile(deployPath("grafana", "breakwater.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("breakwater.json: %v", err)
	}
	var titles []string
	for _, p := range dash.Panels {
		titles = append(titles, strings.ToLower(p.Title))
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkQuery(t, "panel "+p.Title, grafanaVars.Replace(tg.Expr), mfs)
		}
	}
	for _, want := range []string{"throughput", "failures", "latency", "breaker", "dlq", "pending", "cache hit", "workers"} {
		if !slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("no dashboard panel about %q (titles %v)", want, titles)
		}
	}

	rgs, errs := rulefmt.ParseFile(deployPath("prometheus", "alerts.yaml"), false, model.UTF8Validation,
		parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("alerts.yaml: %v", err)
	}
	if rgs == nil {
		t.FailNow()
	}
	var alerts []string
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			checkQuery(t, "alert "+r.Alert, r.Expr, mfs)
		}
	}
	for _, want := range []string{"BreakwaterBreakerOpen", "BreakwaterAvailabilityUnderSLA", "BreakwaterDLQGrowing",
		"BreakwaterConsumerLagGrowing", "BreakwaterNoWorkerHeartbeat"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yaml lacks the alert %s (has %v)", want, alerts)
		}
	}
}
