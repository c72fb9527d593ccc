package server

import (
	"errors"
	"html/template"
	"net/http"
	"strings"
	"time"

	"lambdadb/auth"
	"lambdadb/console"
)

// The console's login (secure mode). A browser cannot send a bearer token
// with a page request, so the console exchanges one, once, for a cookie:
// HttpOnly (no script reads it), SameSite=Strict (no other site's page
// sends it), Secure, scoped to /ui. Only the console's page routes read it
// (authorize); the API never does, so a cookie cannot stand in for a token
// elsewhere. State-changing requests are also refused cross-origin.

const (
	loginPath    = console.Prefix + "login"
	uiCookie     = "lambdadb_ui"
	maxLoginBody = 4 << 10
)

// consoleToken returns the token in the console's cookie.
func consoleToken(r *http.Request) (string, bool) {
	c, err := r.Cookie(uiCookie)
	if err != nil || c.Value == "" {
		return "", false
	}
	return c.Value, true
}

var loginTemplate = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · lambdadb {{.Node}}</title></head>
<body>
<main>
<h1>lambdadb console</h1>
<p>Node <b>{{.Node}}</b> runs in secure mode. Paste an access token
(<code>lambdadb token create</code>); the console keeps it in a cookie only
this node's console pages receive, and shows what the token may see.</p>
{{if .Error}}<p role="alert"><b>{{.Error}}</b></p>{{end}}
<form method="post" action="/ui/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" autofocus required size="70">
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
`))

func (s *Server) renderLogin(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = loginTemplate.Execute(w, struct{ Node, Error string }{s.node.ID(), msg})
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.auth == nil {
		http.Redirect(w, r, console.Prefix, http.StatusSeeOther) // nothing to sign in to
		return
	}
	s.renderLogin(w, http.StatusOK, "")
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.auth == nil {
		http.Redirect(w, r, console.Prefix, http.StatusSeeOther)
		return
	}
	if err := r.ParseForm(); err != nil {
		s.renderLogin(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	p, err := s.auth.Authenticate(r.Context(), tok)
	if err != nil {
		status, msg := http.StatusUnauthorized, "That token is not valid here (mistyped, revoked or expired)."
		if !errors.Is(err, auth.ErrUnauthenticated) {
			status, msg = http.StatusServiceUnavailable, "The node cannot check tokens right now; try again."
		}
		s.denials.Add(auth.Denial{Time: time.Now().UTC(), Route: "console_login", Status: status, Reason: err.Error(), Remote: r.RemoteAddr})
		s.renderLogin(w, status, msg)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: tok, Path: console.Prefix, HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode})
	s.log.Info("console sign-in", "accessor", p.Accessor, "remote", r.RemoteAddr)
	http.Redirect(w, r, console.Prefix, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: "", Path: console.Prefix, MaxAge: -1, HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, loginPath, http.StatusSeeOther)
}
