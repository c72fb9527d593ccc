package scatter

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
)

type rec struct{ key, value string }

// records makes n records across regions, some not JSON, some without
// the amount.
func records(n int, seed uint64) []rec {
	rng := rand.New(rand.NewPCG(seed, 1))
	regions := []string{`"eu"`, `"us"`, `"ap"`, `7`, ``}
	var out []rec
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("orders/%05d", i)
		switch rng.IntN(20) {
		case 0:
			out = append(out, rec{k, "not json"})
		case 1:
			out = append(out, rec{k, `[1,2]`})
		case 2:
			out = append(out, rec{k, `{"region":"eu"}`})
		default:
			r := regions[rng.IntN(len(regions))]
			amount := float64(rng.IntN(1000)) / 4
			if r == "" {
				out = append(out, rec{k, fmt.Sprintf(`{"amount":%g}`, amount)})
			} else {
				out = append(out, rec{k, fmt.Sprintf(`{"region":%s,"amount":%g}`, r, amount)})
			}
		}
	}
	return out
}

// naive computes the expected result directly.
func naive(s Spec, recs []rec) any {
	type g struct {
		n        uint64
		sum      float64
		min, max *float64
		items    []Item
	}
	groups := map[string]*g{}
	for _, r := range recs {
		var obj map[string]any
		if json.Unmarshal([]byte(r.value), &obj) != nil || obj == nil {
			continue
		}
		gk := ""
		if s.GroupBy != "" {
			if v, ok := obj[s.GroupBy]; ok {
				b, _ := json.Marshal(v)
				gk = string(b)
			} else {
				gk = "null"
			}
		}
		if groups[gk] == nil {
			groups[gk] = &g{}
		}
		gr := groups[gk]
		if s.Op == OpCount && s.Field == "" {
			gr.n++
			continue
		}
		x, ok := obj[s.Field].(float64)
		if !ok {
			continue
		}
		gr.n++
		gr.sum += x
		if gr.min == nil || x < *gr.min {
			v := x
			gr.min = &v
		}
		if gr.max == nil || x > *gr.max {
			v := x
			gr.max = &v
		}
		gr.items = append(gr.items, Item{r.key, x})
	}
	val := func(gr *g) any {
		if gr == nil {
			gr = &g{}
		}
		switch s.Op {
		case OpCount:
			return gr.n
		case OpSum:
			return gr.sum
		case OpMin:
			return gr.min
		case OpMax:
			return gr.max
		case OpAvg:
			if gr.n == 0 {
				return nil
			}
			return gr.sum / float64(gr.n)
		case OpTopK:
			sort.Slice(gr.items, func(i, j int) bool { return better(gr.items[i], gr.items[j]) })
			if len(gr.items) > s.K {
				gr.items = gr.items[:s.K]
			}
			if gr.items == nil {
				return []Item{}
			}
			return gr.items
		}
		return nil
	}
	if s.GroupBy == "" {
		return val(groups[""])
	}
	out := map[string]any{}
	for k, gr := range groups {
		out[k] = val(gr)
	}
	return out
}

// TestAggregatesMatchNaive splits records over "shards" at random, builds
// a partial per shard, merges them in random order (through JSON, as they
// travel), and compares with a direct computation.
func TestAggregatesMatchNaive(t *testing.T) {
	recs := records(3000, 7)
	specs := []Spec{
		{Op: OpCount}, {Op: OpCount, Field: "amount"}, {Op: OpSum, Field: "amount"}, {Op: OpMin, Field: "amount"},
		{Op: OpMax, Field: "amount"}, {Op: OpAvg, Field: "amount"}, {Op: OpTopK, Field: "amount", K: 5},
		{Op: OpCount, GroupBy: "region"}, {Op: OpSum, Field: "amount", GroupBy: "region"},
		{Op: OpAvg, Field: "amount", GroupBy: "region"}, {Op: OpMin, Field: "amount", GroupBy: "region"},
		{Op: OpTopK, Field: "amount", GroupBy: "region", K: 3}, {Op: OpSum, Field: "missing"},
		{Op: OpTopK, Field: "amount", K: 10000},
	}
	for _, s := range specs {
		t.Run(fmt.Sprintf("%s/%s/%s", s.Op, s.Field, s.GroupBy), func(t *testing.T) {
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			shards := make([]*Partial, 7)
			for i := range shards {
				shards[i] = NewPartial()
			}
			for _, r := range recs {
				shards[rng.IntN(len(shards))].Add(s, []byte(r.key), []byte(r.value))
			}
			root := NewPartial()
			for _, i := range rng.Perm(len(shards)) {
				b, err := json.Marshal(shards[i])
				if err != nil {
					t.Fatal(err)
				}
				var p Partial
				if err := json.Unmarshal(b, &p); err != nil {
					t.Fatal(err)
				}
				root.Merge(s, &p)
			}
			got, want := norm(groupMap(root.Result(s))), norm(naive(s, recs))
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
			if root.Scanned != uint64(len(recs)) || root.Skipped == 0 {
				t.Fatalf("scanned %d skipped %d", root.Scanned, root.Skipped)
			}
		})
	}
}

// norm makes results comparable despite float summation order.
func norm(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	var round func(any) any
	round = func(x any) any {
		switch y := x.(type) {
		case float64:
			return math.Round(y*1e6) / 1e6
		case map[string]any:
			for k, v := range y {
				y[k] = round(v)
			}
		case []any:
			for i := range y {
				y[i] = round(y[i])
			}
		}
		return x
	}
	return round(out)
}

func TestTopKTiesAndEdges(t *testing.T) {
	s := Spec{Op: OpTopK, Field: "v", K: 2}
	p := NewPartial()
	for _, r := range []rec{{"b", `{"v":5}`}, {"a", `{"v":5}`}, {"c", `{"v":5}`}, {"d", `{"v":1}`}} {
		p.Add(s, []byte(r.key), []byte(r.value))
	}
	got := p.Result(s).([]Item)
	if len(got) != 2 || got[0].Key != "a" || got[1].Key != "b" {
		t.Fatalf("ties: %v", got)
	}
	empty := NewPartial()
	if r := empty.Result(s).([]Item); len(r) != 0 {
		t.Fatalf("empty topk %v", r)
	}
	if r := empty.Result(Spec{Op: OpAvg, Field: "v"}); r != nil {
		t.Fatalf("avg of nothing = %v", r)
	}
	if r := empty.Result(Spec{Op: OpCount, GroupBy: "g"}).([]Group); r == nil || len(r) != 0 {
		t.Fatalf("grouped count of nothing = %v", r)
	}
	// 1 and "1" are different groups; absent is "null".
	g := NewPartial()
	gs := Spec{Op: OpCount, GroupBy: "g"}
	for _, v := range []string{`{"g":1}`, `{"g":"1"}`, `{"x":0}`, `{"g":null}`} {
		g.Add(gs, []byte("k"), []byte(v))
	}
	res := groupMap(g.Result(gs)).(map[string]any)
	if res["1"] != uint64(1) || res[`"1"`] != uint64(1) || res["null"] != uint64(2) {
		t.Fatalf("groups %v", res)
	}
}

// groupMap turns a group_by result ([]Group) into a map from each group's
// JSON text to its value; other results pass through.
func groupMap(v any) any {
	gs, ok := v.([]Group)
	if !ok {
		return v
	}
	out := make(map[string]any, len(gs))
	for _, g := range gs {
		out[string(g.Group)] = g.Value
	}
	return out
}

// TestGroupsAnswer: a group_by answer is a list of {"group","value"} with
// typed group values, numbers by value first, then the rest by JSON text,
// then null.
func TestGroupsAnswer(t *testing.T) {
	s := Spec{Op: OpSum, Field: "a", GroupBy: "g"}
	p := NewPartial()
	for _, v := range []string{`{"g":"us","a":5}`, `{"a":7}`, `{"g":"eu","a":10}`, `{"g":10,"a":1}`, `{"g":"eu","a":20.5}`,
		`{"g":9,"a":2}`, `{"g":true,"a":3}`, `{"g":-1.5,"a":4}`, `{"g":{"b":1,"a":2},"a":6}`} {
		p.Add(s, []byte("k"), []byte(v))
	}
	b, err := json.Marshal(p.Result(s))
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"group":-1.5,"value":4},{"group":9,"value":2},{"group":10,"value":1},{"group":"eu","value":30.5},` +
		`{"group":"us","value":5},{"group":true,"value":3},{"group":{"a":2,"b":1},"value":6},{"group":null,"value":7}]`
	if string(b) != want {
		t.Fatalf("answer %s\nwant   %s", b, want)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, s := range []Spec{{Op: "median", Field: "x"}, {Op: OpSum}, {Op: OpTopK, Field: "x"}, {Op: OpTopK, Field: "x", K: MaxK + 1}, {}} {
		if err := s.Validate(); !errors.Is(err, ErrInvalidAggregate) {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

// addReference is Add written the plain way, over encoding/json (it was
// the implementation before the allocation-free field scan, which read a
// null field as 0): the oracle
// FuzzAdd compares Add against, and BenchmarkAdd's baseline.
func addReference(p *Partial, s Spec, key string, value []byte) {
	p.Scanned++
	p.BytesScanned += uint64(len(key) + len(value))
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(value, &obj); err != nil || obj == nil {
		p.Skipped++
		return
	}
	group := ""
	if s.GroupBy != "" {
		group = groupKey(obj[s.GroupBy])
	}
	acc := p.group(group)
	if s.Op == OpCount && s.Field == "" {
		acc.Count++
		return
	}
	raw, ok := obj[s.Field]
	var x any
	if !ok || json.Unmarshal(raw, &x) != nil {
		p.NoField++
		return
	}
	f, isNum := x.(float64)
	if !isNum || math.IsInf(f, 0) || math.IsNaN(f) {
		p.NoField++
		return
	}
	acc.add(s, []byte(key), f)
}

func FuzzAdd(f *testing.F) {
	for _, v := range []string{`{"a":1,"g":"x"}`, `{"a":1e400}`, `{"a":"NaN"}`, `{"a":null,"g":null}`, `{"a":-0,"g":-0}`,
		`{"g":"a<b","a":2}`, `{"g":"\u0065u","a":3}`, `{"\u0061":4,"g":1.50}`, `{"a":1,"a":2}`, ` { "a" : [1,{"a":9}] , "g" : {"x":[]} } `,
		`{"g":"é","a":1E2}`, "{\"\xff\":5,\"é\":\"x\"}", `{"\u00e9":1,"\ufffd":2}`, `[1]`, `"s"`, `{}`, `{"a":1}x`, `{"g":12345678901234567890,"a":0.1}`, `{"g":true,"a":-1.5e-3}`} {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		for _, s := range []Spec{{Op: OpSum, Field: "a", GroupBy: "g"}, {Op: OpTopK, Field: "a", K: 3}, {Op: OpCount}, {Op: OpCount, GroupBy: "g"},
			{Op: OpMax, Field: "\ufffd", GroupBy: "é"}} {
			p := NewPartial()
			p.Add(s, []byte("k"), v)
			want := NewPartial()
			addReference(want, s, "k", v)
			if !reflect.DeepEqual(p, want) {
				got, _ := json.Marshal(p)
				exp, _ := json.Marshal(want)
				t.Fatalf("%+v over %q:\n got %s\nwant %s", s, v, got, exp)
			}
			q := NewPartial()
			q.Merge(s, p)
			if _, err := json.Marshal(q.Result(s)); err != nil {
				t.Fatalf("result does not encode: %v", err)
			}
		}
	})
}

// BenchmarkAdd folds a ~200-byte order into a grouped sum, the leaves'
// inner loop.
func BenchmarkAdd(b *testing.B) {
	v := []byte(`{"region":"eu-west","amount":123.45,"customer":"c0012345","sku":"sku-00042","qty":3,"note":"` + strings.Repeat("x", 90) + `"}`)
	for _, spec := range []Spec{{Op: "sum", Field: "amount", GroupBy: "region"}, {Op: "count"}, {Op: "topk", Field: "amount", K: 10}} {
		b.Run(spec.Op, func(b *testing.B) {
			p := NewPartial()
			key := []byte("orders/000000001")
			b.SetBytes(int64(len(v)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				p.Add(spec, key, v)
			}
		})
		b.Run(spec.Op+"/reference", func(b *testing.B) {
			p := NewPartial()
			b.SetBytes(int64(len(v)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				addReference(p, spec, "orders/000000001", v)
			}
		})
	}
}

func TestCanonicalNumber(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"0", "0"}, {"-0", "0"}, {"0.000", "0"}, {"0e5", "0"},
		{"1", "1"}, {"1.0", "1"}, {"1e0", "1"}, {"10E-1", "1"}, {"100e-2", "1"},
		{"-12.50", "-12.5"}, {"1.5", "1.5"}, {"0.1", "0.1"}, {"0.000001", "0.000001"},
		{"1e-7", "1e-7"}, {"0.00000012", "1.2e-7"}, {"1e3", "1000"}, {"1E+3", "1000"},
		{"123456789012345678901", "123456789012345678901"},
		{"1e21", "1e+21"}, {"12e20", "1.2e+21"}, {"-1.5e300", "-1.5e+300"},
		// Beyond float64's precision, still exact.
		{"9007199254740993", "9007199254740993"}, {"9007199254740992", "9007199254740992"},
		{"0.1000000000000000000001", "0.1000000000000000000001"},
		// Exponents beyond float64 and beyond int64: exact, signed, and
		// one text for one value.
		{"1e400", "1e+400"}, {"-25e-401", "-2.5e-400"},
		{"1e9223372036854775807", "1e+9223372036854775807"},
		{"10E9223372036854775806", "1e+9223372036854775807"},
		{"0.1e-9223372036854775808", "1e-9223372036854775809"},
		{"1e99999999999999999999", "1e+99999999999999999999"},
		{"-10e99999999999999999998", "-1e+99999999999999999999"},
		{"0.001e+99999999999999999999", "1e+99999999999999999996"},
		{"1e1099511627776", "1e+1099511627776"}, {"10e1099511627776", "1e+1099511627777"},
	} {
		if got := canonicalNumber(c.in); got != c.want {
			t.Errorf("canonicalNumber(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	// Where float64 is exact, the form is json.Marshal's.
	for _, x := range []float64{0, 1, -1, 1.5, 0.1, 1e-6, 1e-7, 123.456, 1e20, 1e21, 2.5e-300, 1.7976931348623157e308} {
		b, _ := json.Marshal(x)
		if got := canonicalNumber(string(b)); got != string(b) {
			t.Errorf("canonicalNumber(%s) = %s", b, got)
		}
	}
}

func TestGroupKeyExactNumbers(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"1", "1.0"}, {"1", "1e0"}, {`{"b":1,"a":[2.0]}`, `{"a":[2],"b":1e0}`}, {`"x"`, ` "x" `},
	} {
		if groupKey(json.RawMessage(c.a)) != groupKey(json.RawMessage(c.b)) {
			t.Errorf("%s and %s are different groups: %s, %s", c.a, c.b, groupKey(json.RawMessage(c.a)), groupKey(json.RawMessage(c.b)))
		}
	}
	for _, c := range []struct{ a, b string }{
		{"1", `"1"`}, {"9007199254740993", "9007199254740992"}, {`[9007199254740993]`, `[9007199254740992]`},
		{"1e99999999999999999999", "-1e99999999999999999999"},
	} {
		if groupKey(json.RawMessage(c.a)) == groupKey(json.RawMessage(c.b)) {
			t.Errorf("%s and %s are one group: %s", c.a, c.b, groupKey(json.RawMessage(c.a)))
		}
	}
}

// FuzzCanonicalNumber: the canonical text is a JSON number of the same
// value, and canonical already.
func FuzzCanonicalNumber(f *testing.F) {
	for _, s := range []string{"0", "-0.0", "1.50", "1e21", "0.0000001", "9007199254740993", "-12E-3", "123456789012345678901234",
		"1e9223372036854775807", "-0.1e-9223372036854775808", "1e99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, n string) {
		var num json.Number
		if json.Unmarshal([]byte(n), &num) != nil || !json.Valid([]byte(n)) {
			return
		}
		n = string(num)
		c := canonicalNumber(n)
		if !json.Valid([]byte(c)) {
			t.Fatalf("canonicalNumber(%s) = %s, not JSON", n, c)
		}
		if cc := canonicalNumber(c); cc != c {
			t.Fatalf("canonicalNumber(%s) = %s, then %s", n, c, cc)
		}
		x, err1 := strconv.ParseFloat(n, 64)
		y, err2 := strconv.ParseFloat(c, 64)
		if (err1 == nil) != (err2 == nil) || err1 == nil && x != y {
			t.Fatalf("canonicalNumber(%s) = %s: %v (%v) vs %v (%v)", n, c, x, err1, y, err2)
		}
		if canonicalAsIs([]byte(c)) && c != groupKey(json.RawMessage(c)) {
			t.Fatalf("%s is canonical as is but groupKey says %s", c, groupKey(json.RawMessage(c)))
		}
	})
}

// TestAddHugeExponentGroup: a group value whose exponent overflows int64
// once panicked the leaf (and its node) in groupKey.
func TestAddHugeExponentGroup(t *testing.T) {
	spec := Spec{Op: OpSum, Field: "amount", GroupBy: "region"}
	p := NewPartial()
	for _, v := range []string{
		`{"region":1e9223372036854775807,"amount":1}`,
		`{"region":10E9223372036854775806,"amount":2}`,
		`{"region":0.1e-9223372036854775808,"amount":4}`,
		`{"region":-1e99999999999999999999,"amount":8}`,
	} {
		p.Add(spec, []byte("k"), []byte(v))
	}
	want := map[string]float64{"1e+9223372036854775807": 3, "1e-9223372036854775809": 4, "-1e+99999999999999999999": 8}
	if len(p.Groups) != len(want) {
		t.Fatalf("groups %v, want %v", p.Groups, want)
	}
	for g, sum := range want {
		if a := p.Groups[g]; a == nil || a.Sum != sum {
			t.Errorf("group %s: %+v, want sum %v", g, a, sum)
		}
	}
}

func TestSortGroups(t *testing.T) {
	gs := []string{`null`, `"b"`, `10`, `9`, `-1.5`, `"a"`, `true`, `"5x"`, `"10"`, `1e+400`}
	got := strings.Join(SortGroups(gs), " ")
	if want := `-1.5 9 10 1e+400 "10" "5x" "a" "b" true null`; got != want {
		t.Errorf("SortGroups = %s, want %s", got, want)
	}
}
