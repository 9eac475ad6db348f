// Package console is Breakwater's web console, served by publisher ui:
// pages and a JSON API over the installation's streams, read through the
// domain packages (dlq.Admin for the DLQ, health events for backends,
// workers and alerts, schedule.Client for schedules, the admin plane for
// controls), with live updates as server-sent events from the HEALTH
// stream.
//
// Pages are rendered on the server with html/template from files embedded
// with go:embed and are readable without JavaScript; the one script
// (static/app.js, no build step) only applies the events of /api/events to
// the tables already on the page. Charts are SVG drawn here, so no asset
// comes from another origin.
//
// Security: every response carries a strict Content-Security-Policy (no
// inline script or style); reads are open unless a token is set (then
// every request needs it, as a bearer token or the HttpOnly cookie the
// login form sets); actions (POST /api/...) answer 403 unless
// Options.AllowActions, and every POST needs the CSRF token of the pages
// (or a bearer token) and passes http.CrossOriginProtection. On a loopback
// listener the Host header must name a loopback host (no DNS rebinding).
//
// A Console's Run owns the goroutine that follows the HEALTH stream; the
// handler serves while it runs. See docs/console.md for the pages, the API
// and the actions.
package console
