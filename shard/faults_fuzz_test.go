package shard

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzFaultsHandler PUTs arbitrary bodies to the /debug/faults handler (a
// node started with the test-only fault flag decodes them from the
// network): no panic, 200 or 400, and an accepted rule set is what GET
// then lists.
func FuzzFaultsHandler(f *testing.F) {
	f.Add([]byte(`[{"from":"n1","to":"n2","drop":true}]`))
	f.Add([]byte(`[{"from":"n1","to":"n2","drop":true,"raft_only":true},{"from":"n2","to":"n3","delay_ns":5000000}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[{"from":"n1","to":"n2","delay_ns":-1}]`))
	f.Add([]byte(`{"from":"n1"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var fs Faults
		h := fs.Handler()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/debug/faults", bytes.NewReader(body)))
		switch w.Code {
		case http.StatusBadRequest:
			if len(fs.Rules()) != 0 {
				t.Fatalf("rejected body %q still set rules %v", body, fs.Rules())
			}
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d for %q", w.Code, body)
		}
		var put, got []FaultRule
		if err := json.Unmarshal(w.Body.Bytes(), &put); err != nil {
			t.Fatalf("PUT answer does not decode: %v", err)
		}
		w = httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/debug/faults", nil))
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("GET answer does not decode: %v", err)
		}
		if len(got) != len(put) {
			t.Fatalf("PUT answered %d rules, GET lists %d", len(put), len(got))
		}
		for _, r := range got {
			dropped, delay := fs.check(r.From, r.To, true)
			if r.Drop && !dropped || r.Delay > 0 && delay != r.Delay {
				t.Fatalf("rule %+v listed but not in force (dropped %v, delay %v)", r, dropped, delay)
			}
		}
	})
}
