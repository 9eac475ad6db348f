package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"time"
)

// cookieName is the session cookie the login form sets.
const cookieName = "breakwater_console"

// csp allows nothing from another origin, no inline script or style, and
// no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// mac keys msg with the console's secret.
func (c *Console) mac(msg string) []byte {
	h := hmac.New(sha256.New, c.secret)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// session is the cookie value of a login: it proves the token without
// being it, and dies with the process.
func (c *Console) session() string { return hex.EncodeToString(c.mac("session|" + c.o.Token)) }

// secure wraps every handler: headers, the Host check, authentication,
// and the POST checks (CSRF, cross-origin, actions allowed).
func (c *Console) secure(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpError(w, r, http.StatusForbidden, "cross-origin request refused")
	}))
	protected := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if c.o.LoopbackOnly && !loopbackHost(r.Host) {
			httpError(w, r, http.StatusMisdirectedRequest, "this console answers on a loopback host name only")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, HEAD, POST")
			httpError(w, r, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		isLogin := r.URL.Path == "/login"
		bearer := c.bearer(r)
		if c.o.Token != "" && !isLogin && !strings.HasPrefix(r.URL.Path, "/static/") && !bearer && !c.cookie(r) {
			if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="breakwater console"`)
			httpError(w, r, http.StatusUnauthorized, "authentication required")
			return
		}
		if r.Method == http.MethodPost {
			if !isLogin && !c.o.AllowActions {
				httpError(w, r, http.StatusForbidden, "actions are disabled: start publisher ui with --allow-actions")
				return
			}
			// A bearer token is no ambient credential: a page of another
			// origin cannot send it, so such a request needs no CSRF token.
			if !bearer && !c.validCSRF(r) {
				httpError(w, r, http.StatusForbidden, "missing or wrong CSRF token")
				return
			}
			protected.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer reports whether r carries the token as a bearer token.
func (c *Console) bearer(r *http.Request) bool {
	if c.o.Token == "" {
		return false
	}
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(v)), []byte(c.o.Token)) == 1
}

// cookie reports whether r carries a valid session cookie.
func (c *Console) cookie(r *http.Request) bool {
	k, err := r.Cookie(cookieName)
	return err == nil && subtle.ConstantTimeCompare([]byte(k.Value), []byte(c.session())) == 1
}

// validCSRF checks the token of a form (field csrf) or a script
// (X-CSRF-Token).
func (c *Console) validCSRF(r *http.Request) bool {
	v := r.Header.Get("X-CSRF-Token")
	if v == "" {
		// Forms are small: bound what is read to find the field.
		r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
		v = r.PostFormValue("csrf")
	}
	return v != "" && subtle.ConstantTimeCompare([]byte(v), []byte(c.csrf)) == 1
}

// login checks the token of the login form and sets the session cookie.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		c.render(w, r, "login", map[string]any{"Title": "Log in", "Token": c.o.Token != "", "NoLive": true})
		return
	}
	if c.o.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("token")), []byte(c.o.Token)) != 1 {
		w.WriteHeader(http.StatusUnauthorized)
		c.render(w, r, "login", map[string]any{"Title": "Log in", "Token": true, "Failed": true, "NoLive": true})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: c.session(), Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int((12 * time.Hour).Seconds())})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// loopbackHost reports whether the Host header names a loopback host.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
