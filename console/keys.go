package console

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"unicode"
	"unicode/utf8"

	"lambdadb/namespace"
	"lambdadb/shard"
)

// Key browser sizes.
const (
	defaultKeysPage = 50
	maxKeysPage     = 500
	// maxPreview bounds the bytes of a value shown (its preview says
	// how many were left out).
	maxPreview = 4 << 10
)

type keysView struct {
	Page   page
	Prefix string
	Start  string
	Limit  int
	Items  []keyItem
	Next   string // URL of the next page; "" on the last
	Error  string
}

type keyItem struct {
	Key     string
	Version uint64
	Size    int
	Kind    string // json, text, hex or empty
	Preview string
	Cut     int // bytes left out of the preview
}

// keysPage lists one page of the request's namespace's keys under prefix,
// from start, through the same scan as GET /v1/kv.
func (c *Console) keysPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v := keysView{Page: c.pageOf(r, "Keys", "keys"), Prefix: q.Get("prefix"), Start: q.Get("start"), Limit: defaultKeysPage}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			v.Error = fmt.Sprintf("limit %q is not a positive integer", s)
			c.render(w, r, http.StatusBadRequest, "keys.html", v)
			return
		}
		v.Limit = min(n, maxKeysPage)
	}
	status, err := c.scan(r, &v)
	if err != nil {
		v.Error = err.Error()
	}
	c.render(w, r, status, "keys.html", v)
}

var errForbidden = errors.New("this token may not read keys under this prefix")

// scan fills v.Items and v.Next; it returns the answer's status.
func (c *Console) scan(r *http.Request, v *keysView) (int, error) {
	for _, p := range []string{v.Prefix, v.Start} {
		if err := namespace.ValidatePrefix(p); err != nil {
			return http.StatusBadRequest, err
		}
	}
	if !c.canRead(r, v.Prefix) {
		return http.StatusForbidden, errForbidden
	}
	ns := namespace.From(r.Context())
	lo, hi := namespace.Range(ns, v.Prefix, v.Start, "")
	res, err := c.node.Scan(r.Context(), shard.ScanRequest{Prefix: namespace.Prefix(ns, v.Prefix), Start: lo, End: hi, Limit: v.Limit}, shard.ReadOptions{})
	if err != nil {
		return http.StatusServiceUnavailable, err
	}
	for _, rec := range res.Items {
		k, ok := namespace.Strip(ns, rec.Key)
		if !ok {
			continue
		}
		it := keyItem{Key: k, Version: rec.Version, Size: len(rec.Value)}
		it.Kind, it.Preview, it.Cut = preview(rec.Value)
		v.Items = append(v.Items, it)
	}
	if res.More {
		if next, ok := namespace.Strip(ns, res.Next); ok {
			u := url.Values{"prefix": {v.Prefix}, "start": {next}}
			if v.Limit != defaultKeysPage {
				u.Set("limit", strconv.Itoa(v.Limit))
			}
			v.Next = Prefix + "keys?" + u.Encode()
		}
	}
	return http.StatusOK, nil
}

// preview renders a value for reading: JSON pretty-printed, UTF-8 text as
// it is, anything else as a hex dump; at most maxPreview bytes of it.
func preview(b []byte) (kind, text string, cut int) {
	if len(b) == 0 {
		return "", "", 0
	}
	if len(b) <= 64<<10 && json.Valid(b) {
		var out bytes.Buffer
		if json.Indent(&out, b, "", "  ") == nil {
			s, c := clip(out.Bytes())
			return "json", s, c
		}
	}
	if utf8.Valid(b) && printable(b) {
		s, c := clip(b)
		return "text", s, c
	}
	n := min(len(b), 512)
	return "hex", hex.Dump(b[:n]), len(b) - n
}

// clip cuts b to maxPreview bytes at a rune boundary.
func clip(b []byte) (string, int) {
	if len(b) <= maxPreview {
		return string(b), 0
	}
	n := maxPreview
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]), len(b) - n
}

// printable reports whether text b has no control characters but
// whitespace.
func printable(b []byte) bool {
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}
