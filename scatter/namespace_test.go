package scatter

import (
	"testing"

	"lambdadb/namespace"
)

// TestQueryNamespace: a query's namespace travels to the other nodes, and
// its bounds stay inside the namespace whatever its prefix and range.
func TestQueryNamespace(t *testing.T) {
	q := Query{Namespace: "shop", Prefix: "o/", Start: "a", End: "\U0010FFFF", Aggregate: &Spec{Op: OpCount}}
	got, err := toWire(q).query()
	if err != nil || got.Namespace != "shop" {
		t.Fatalf("wire round trip: %+v %v", got, err)
	}
	lo, hi := q.bounds()
	if string(lo) != namespace.Key("shop", "o/") || string(hi) != namespace.Key("shop", "o0") {
		t.Fatalf("shop bounds [%q, %q)", lo, hi)
	}
	lo, hi = Query{}.bounds()
	if string(lo) != "" || string(hi) != "\xff" {
		t.Fatalf("default bounds [%q, %q): other namespaces' keys are inside", lo, hi)
	}
	lo, hi = Query{Namespace: "blog"}.bounds()
	if string(lo) != "\xffblog\x00" || string(hi) != "\xffblog\x01" {
		t.Fatalf("blog bounds [%q, %q)", lo, hi)
	}
	if err := (Query{Namespace: "Bad!", Aggregate: &Spec{Op: OpCount}}).Validate(); err == nil {
		t.Fatal("a malformed namespace validated")
	}
}
