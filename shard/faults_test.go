package shard

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestFaultsRules(t *testing.T) {
	var f Faults
	f.Partition([]string{"a"}, []string{"b", "c"})
	f.DropRaft("b", "c")
	f.Delay("c", "a", 5*time.Millisecond)
	cases := []struct {
		from, to string
		raft     bool
		dropped  bool
		delay    time.Duration
	}{
		{"a", "b", false, true, 0},
		{"b", "a", true, true, 0},
		{"b", "c", false, false, 0},
		{"b", "c", true, true, 0},
		{"c", "b", true, false, 0},
		{"c", "a", false, true, 5 * time.Millisecond},
	}
	for _, c := range cases {
		d, delay := f.check(c.from, c.to, c.raft)
		if d != c.dropped || delay != c.delay {
			t.Errorf("check(%s→%s raft=%v) = %v, %v; want %v, %v", c.from, c.to, c.raft, d, delay, c.dropped, c.delay)
		}
	}
	var g Faults
	g.Set(f.Rules())
	for _, c := range cases {
		d1, l1 := f.check(c.from, c.to, c.raft)
		d2, l2 := g.check(c.from, c.to, c.raft)
		if d1 != d2 || l1 != l2 {
			t.Errorf("Set(Rules()) differs for %s→%s", c.from, c.to)
		}
	}
	f.Heal()
	if d, _ := f.check("a", "b", false); d || len(f.Rules()) != 0 {
		t.Error("Heal left faults")
	}
	var nilFaults *Faults
	if d, l := nilFaults.check("a", "b", true); d || l != 0 {
		t.Error("nil Faults injected something")
	}
}

func TestFaultsHandler(t *testing.T) {
	var f Faults
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	do := func(method, body string) (int, []FaultRule) {
		req, _ := http.NewRequest(method, srv.URL, strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var rules []FaultRule
		if res.StatusCode == 200 {
			if err := json.NewDecoder(res.Body).Decode(&rules); err != nil {
				t.Fatal(err)
			}
		}
		return res.StatusCode, rules
	}
	if code, rules := do("GET", ""); code != 200 || len(rules) != 0 {
		t.Fatalf("GET empty: %d %v", code, rules)
	}
	if code, rules := do("PUT", `[{"from":"n1","to":"n2","drop":true},{"from":"n2","to":"n3","delay_ns":1000000}]`); code != 200 || len(rules) != 2 {
		t.Fatalf("PUT: %d %v", code, rules)
	}
	if d, _ := f.check("n1", "n2", false); !d {
		t.Fatal("PUT did not install the drop")
	}
	if code, _ := do("PUT", `{"not":"a list"}`); code != 400 {
		t.Fatalf("bad body: %d", code)
	}
	if code, _ := do("POST", ""); code != 405 {
		t.Fatalf("POST: %d", code)
	}
	if code, rules := do("DELETE", ""); code != 200 || len(rules) != 0 {
		t.Fatalf("DELETE: %d %v", code, rules)
	}
}
