package console

import (
	"fmt"
	"html"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// series is one line of a chart.
type series struct {
	Name  string
	Color string
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 640, 200
	padL, padR     = 56, 12
	padT, padB     = 24, 28
)

// drawChart renders a line chart of pts over the last window, one line
// per series (pts[i].values[j] is series j), as a standalone SVG: no
// script, no style sheet, only presentation attributes, so it passes the
// console's Content-Security-Policy as an image.
func drawChart(title, unit string, ss []series, pts []point, now time.Time) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" font-family="sans-serif" font-size="11">`, chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`, chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="15" font-size="13" font-weight="bold" fill="#222">%s</text>`, padL, html.EscapeString(title))
	top := 0.0
	for _, p := range pts {
		for _, v := range p.values {
			top = math.Max(top, v)
		}
	}
	top = niceCeil(top)
	x0, x1 := float64(padL), float64(chartW-padR)
	y0, y1 := float64(chartH-padB), float64(padT)
	start := now.Add(-window)
	xOf := func(t time.Time) float64 {
		return x0 + (x1-x0)*math.Min(math.Max(t.Sub(start).Seconds()/window.Seconds(), 0), 1)
	}
	yOf := func(v float64) float64 { return y0 - (y0-y1)*v/top }
	// Grid and axes.
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		y := yOf(v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e3e3e3"/>`, x0, y, x1, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555">%s</text>`, x0-4, y+4, html.EscapeString(short(v)+unit))
	}
	for i, label := range []string{"-15m", "-10m", "-5m", "now"} {
		x := x0 + (x1-x0)*float64(i)/3
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`, x, chartH-8, label)
	}
	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#888">no data in the last 15 minutes</text>`, (x0+x1)/2, (y0+y1)/2)
	}
	for j, s := range ss {
		var line strings.Builder
		n := 0
		for _, p := range pts {
			if p.at.Before(start) || j >= len(p.values) {
				continue
			}
			fmt.Fprintf(&line, "%.1f,%.1f ", xOf(p.at), yOf(p.values[j]))
			n++
		}
		if n == 1 {
			// One point draws no line: show it as a dot.
			var x, y float64
			fmt.Sscanf(line.String(), "%f,%f", &x, &y)
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, x, y, s.Color)
		} else if n > 1 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`, s.Color, strings.TrimSpace(line.String()))
		}
		lx := x1 - float64(len(ss)-j)*90
		fmt.Fprintf(&b, `<rect x="%.1f" y="7" width="10" height="10" fill="%s"/><text x="%.1f" y="16" fill="#222">%s</text>`, lx, s.Color, lx+14, html.EscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return []byte(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func short(v float64) string {
	if v == math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func writeSVG(w http.ResponseWriter, svg []byte) {
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(svg)
}

var latencySeries = []series{{"p50", "#2b8a3e"}, {"p95", "#e67700"}, {"p99", "#c92a2a"}}

func (c *Console) throughputChart(w http.ResponseWriter, _ *http.Request) {
	writeSVG(w, drawChart("Tasks per second (all workers)", "", []series{{"done", "#1c7ed6"}, {"failed", "#c92a2a"}}, c.state.rates(), c.o.Now()))
}

// latencyChart draws one backend's percentiles (/chart/backend/{name}) or
// the slowest backend's at each point (/chart/latency.svg).
func (c *Console) latencyChart(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSuffix(r.PathValue("name"), ".svg")
	title := "Latency, slowest backend (ms)"
	if name != "" {
		title = "Latency of " + name + " (ms)"
	}
	writeSVG(w, drawChart(title, "", latencySeries, c.state.latencyPoints(name), c.o.Now()))
}
