package shop

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"lambdadb/client"
	"lambdadb/examples/shop/model"
)

//go:embed web
var webFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"money": func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) },
	"when": func(rfc string) string {
		t, err := time.Parse(time.RFC3339Nano, rfc)
		if err != nil {
			return rfc
		}
		return t.Format("2006-01-02 15:04:05Z")
	},
	"pct": func(v any, max float64) float64 {
		f := 0.0
		switch x := v.(type) {
		case float64:
			f = x
		case int:
			f = float64(x)
		}
		if max <= 0 {
			return 0
		}
		return math.Round(f / max * 100)
	},
}).ParseFS(webFS, "web/*.html"))

// SessionCookie holds the browser's lambdadb session token; API callers
// may send it as X-Session instead, and get it back in X-Session.
const (
	SessionCookie = "lambdadb_session"
	SessionHeader = "X-Session"
)

// Handler returns the shop's pages and API.
func (s *Shop) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web/static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.pageHome)
	mux.HandleFunc("POST /order", s.pageOrder)
	mux.HandleFunc("GET /customers", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/customers/"+url.PathEscape(r.FormValue("c")), http.StatusSeeOther)
	})
	mux.HandleFunc("GET /customers/{c}", s.pageCustomer)
	mux.HandleFunc("GET /analytics", s.pageAnalytics)
	mux.HandleFunc("GET /live", s.pageLive)
	mux.HandleFunc("GET /live/ws", s.serveLive)
	mux.HandleFunc("POST /api/orders", s.apiOrder)
	mux.HandleFunc("GET /api/customers/{c}", s.apiCustomer)
	mux.HandleFunc("GET /api/analytics", s.apiAnalytics)
	mux.HandleFunc("GET /api/products", s.apiProducts)
	return withHeaders(http.NewCrossOriginProtection().Handler(mux))
}

// withHeaders sets a strict content security policy: the pages load
// nothing but the shop's own scripts, styles and WebSocket.
func withHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// token is the caller's session token: X-Session, else the cookie.
func token(r *http.Request) string {
	if t := r.Header.Get(SessionHeader); t != "" {
		return t
	}
	if c, err := r.Cookie(SessionCookie); err == nil {
		return c.Value
	}
	return ""
}

// keep returns tok to the caller, as X-Session and as the cookie.
func keep(w http.ResponseWriter, tok string) {
	if tok == "" {
		return
	}
	w.Header().Set(SessionHeader, tok)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
}

func statusOf(err error) int {
	var e *client.Error
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrOutOfStock):
		return http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.As(err, &e) && (e.Status == http.StatusServiceUnavailable || e.Status == http.StatusGatewayTimeout ||
		e.Status == http.StatusTooManyRequests):
		return e.Status // lambdadb's answer: unavailable, timed out, overloaded
	}
	return http.StatusBadGateway
}

func reqCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 20*time.Second)
}

// OrderRequest is the body of POST /api/orders.
type OrderRequest struct {
	Customer string  `json:"customer"`
	Region   string  `json:"region"`
	Product  string  `json:"product"`
	Qty      int     `json:"qty"`
	Amount   float64 `json:"amount"`
}

// OrderResponse answers POST /api/orders.
type OrderResponse struct {
	ID    string      `json:"id"`
	Order model.Order `json:"order"`
	Left  int         `json:"left"` // the product's stock after the order
}

func (s *Shop) apiOrder(w http.ResponseWriter, r *http.Request) {
	var req OrderRequest
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
		return
	}
	ctx, cancel := reqCtx(r)
	defer cancel()
	o, tok, left, err := s.PlaceOrder(ctx, token(r), model.Order{Customer: req.Customer, Region: req.Region, Product: req.Product, Qty: req.Qty, Amount: req.Amount})
	keep(w, tok)
	switch {
	case errors.Is(err, ErrOutOfStock):
		writeJSON(w, http.StatusConflict, map[string]any{"error": "out of stock", "left": left})
	case err != nil:
		writeErr(w, err)
	default:
		writeJSON(w, http.StatusCreated, OrderResponse{ID: o.ID, Order: o, Left: left})
	}
}

func (s *Shop) apiCustomer(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	v, tok, err := s.Customer(ctx, token(r), r.PathValue("c"))
	keep(w, tok)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Shop) apiAnalytics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	a, err := s.Analytics(ctx, token(r))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Shop) apiProducts(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	ps, err := s.Products(ctx, token(r))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ps)
}

// page renders a page of the layout.
func (s *Shop) page(w http.ResponseWriter, status int, name string, data map[string]any) {
	data["Page"] = name
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, name+".html", data); err != nil {
		s.log.Warn("render", "page", name, "err", err)
	}
}

func (s *Shop) pageHome(w http.ResponseWriter, r *http.Request) {
	s.home(w, r, http.StatusOK, map[string]any{})
}

func (s *Shop) home(w http.ResponseWriter, r *http.Request, status int, data map[string]any) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	ps, err := s.Products(ctx, token(r))
	if err != nil {
		data["Error"] = "reading the stock: " + err.Error()
	}
	data["Products"], data["Regions"] = ps, Regions
	if data["Form"] == nil {
		data["Form"] = OrderRequest{Qty: 1, Region: Regions[0]}
	}
	s.page(w, status, "home", data)
}

// pageOrder places an order from the home page's form: the amount is the
// catalog price times the quantity.
func (s *Shop) pageOrder(w http.ResponseWriter, r *http.Request) {
	qty, _ := strconv.Atoi(r.FormValue("qty"))
	f := OrderRequest{Customer: r.FormValue("customer"), Region: r.FormValue("region"), Product: r.FormValue("product"), Qty: qty}
	p, ok := s.catalog[f.Product]
	if !ok {
		s.home(w, r, http.StatusBadRequest, map[string]any{"Error": "choose a product", "Form": f})
		return
	}
	f.Amount = float64(model.ToCents(p.Price*float64(qty))) / 100
	ctx, cancel := reqCtx(r)
	defer cancel()
	o, tok, left, err := s.PlaceOrder(ctx, token(r), model.Order{Customer: f.Customer, Region: f.Region, Product: f.Product, Qty: f.Qty, Amount: f.Amount})
	keep(w, tok)
	switch {
	case errors.Is(err, ErrOutOfStock):
		s.home(w, r, http.StatusConflict, map[string]any{"Error": "only " + strconv.Itoa(left) + " " + f.Product + " left", "Form": f})
	case err != nil:
		s.home(w, r, statusOf(err), map[string]any{"Error": err.Error(), "Form": f})
	default:
		http.Redirect(w, r, "/customers/"+url.PathEscape(o.Customer)+"?placed="+url.QueryEscape(o.ID), http.StatusSeeOther)
	}
}

func (s *Shop) pageCustomer(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	v, tok, err := s.Customer(ctx, token(r), r.PathValue("c"))
	keep(w, tok)
	data := map[string]any{"C": v, "Placed": r.FormValue("placed")}
	status := http.StatusOK
	if err != nil {
		data["Error"], status = err.Error(), statusOf(err)
	}
	s.page(w, status, "customer", data)
}

func (s *Shop) pageAnalytics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	a, err := s.Analytics(ctx, token(r))
	data := map[string]any{"A": a}
	status := http.StatusOK
	if err != nil {
		data["Error"], status = err.Error(), statusOf(err)
	}
	max := func(vs ...float64) float64 {
		m := 0.0
		for _, v := range vs {
			m = math.Max(m, v)
		}
		return m
	}
	var rev, units, tops, sizes []float64
	for _, v := range a.RevenueByRegion {
		rev = append(rev, v)
	}
	for _, v := range a.UnitsSold {
		units = append(units, v)
	}
	for _, t := range a.TopCustomers {
		tops = append(tops, t.Total)
	}
	type bucket struct {
		Name  string
		Count int
	}
	var hist []bucket
	for _, b := range []string{"1", "2", "3-5", "6-10", "11+"} {
		hist = append(hist, bucket{b, a.OrderSizes[b]})
		sizes = append(sizes, float64(a.OrderSizes[b]))
	}
	data["MaxRevenue"], data["MaxUnits"], data["MaxTop"], data["MaxSize"] = max(rev...), max(units...), max(tops...), max(sizes...)
	data["Sizes"] = hist
	s.page(w, status, "analytics", data)
}

func (s *Shop) pageLive(w http.ResponseWriter, r *http.Request) {
	s.page(w, http.StatusOK, "live", map[string]any{})
}
