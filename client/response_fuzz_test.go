package client

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// FuzzResponse feeds the client's decoders of server answers — the ETag
// that carries a version and an error body — with arbitrary bytes: no
// panic, a parsed ETag is the quoted decimal it came from, and an error
// keeps its status and a bounded message.
func FuzzResponse(f *testing.F) {
	f.Add(`"7"`, 412, []byte(`{"error":"shard: precondition failed","code":"precondition_failed"}`))
	f.Add(`"18446744073709551616"`, 503, []byte("Service Unavailable"))
	f.Add(`W/"1"`, 500, []byte(`{"error":"x"}`))
	f.Add(`""`, 404, []byte(strings.Repeat("z", 2*maxMessage)))
	f.Fuzz(func(t *testing.T, etag string, status int, body []byte) {
		if v, err := parseETag(etag); err == nil {
			digits := etag[1 : len(etag)-1]
			if got, _ := strconv.ParseUint(digits, 10, 64); got != v {
				t.Fatalf("parseETag(%q) = %d", etag, v)
			}
		}
		e := newError(&http.Response{StatusCode: status}, body)
		if e.Status != status {
			t.Fatalf("status %d became %d", status, e.Status)
		}
		if e.Code == "" && len(e.Message) > maxMessage+3 {
			t.Fatalf("message of %d bytes", len(e.Message))
		}
		_ = e.Error()
		_ = e.Is(ErrNotFound)
	})
}
