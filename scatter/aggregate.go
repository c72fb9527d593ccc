package scatter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalidAggregate is an aggregate specification that cannot run.
var ErrInvalidAggregate = errors.New("scatter: invalid aggregate")

// Aggregate operations.
const (
	OpCount = "count"
	OpSum   = "sum"
	OpMin   = "min"
	OpMax   = "max"
	OpAvg   = "avg"
	OpTopK  = "topk"
)

// MaxK bounds topk's k.
const MaxK = 10000

// Spec is a built-in aggregate: Op over the top-level Field of JSON object
// values, per value of the top-level GroupBy field when set.
type Spec struct {
	Op      string `json:"op"`
	Field   string `json:"field,omitempty"`
	GroupBy string `json:"group_by,omitempty"`
	K       int    `json:"k,omitempty"` // topk: how many
}

// Validate checks the spec.
func (s Spec) Validate() error {
	switch s.Op {
	case OpCount:
	case OpSum, OpMin, OpMax, OpAvg:
		if s.Field == "" {
			return fmt.Errorf("%w: %s needs a field", ErrInvalidAggregate, s.Op)
		}
	case OpTopK:
		if s.Field == "" {
			return fmt.Errorf("%w: topk needs a field", ErrInvalidAggregate)
		}
		if s.K < 1 || s.K > MaxK {
			return fmt.Errorf("%w: topk k=%d outside 1..%d", ErrInvalidAggregate, s.K, MaxK)
		}
	default:
		return fmt.Errorf("%w: unknown op %q (count, sum, min, max, avg, topk)", ErrInvalidAggregate, s.Op)
	}
	return nil
}

// Item is one record in a topk result.
type Item struct {
	Key   string  `json:"key"`
	Value float64 `json:"value"`
}

// Acc is one group's partial aggregate.
type Acc struct {
	Count uint64   `json:"count"` // records counted (with a numeric field, for field ops)
	Sum   float64  `json:"sum"`
	Min   *float64 `json:"min,omitempty"`
	Max   *float64 `json:"max,omitempty"`
	Top   []Item   `json:"top,omitempty"` // topk: best first, at most K
}

// Partial is a mergeable partial result: what a leaf returns and a
// combine merges.
type Partial struct {
	Groups map[string]*Acc `json:"groups"`
	// Scanned counts records read; Skipped those that were not JSON
	// objects; NoField JSON objects without a numeric Field (field ops).
	Scanned      uint64 `json:"scanned"`
	Skipped      uint64 `json:"skipped"`
	NoField      uint64 `json:"no_field"`
	BytesScanned uint64 `json:"bytes_scanned"`
}

// NewPartial returns an empty partial.
func NewPartial() *Partial { return &Partial{Groups: map[string]*Acc{}} }

// Add folds one record into p. key is read only for topk.
func (p *Partial) Add(s Spec, key, value []byte) {
	p.Scanned++
	p.BytesScanned += uint64(len(key) + len(value))
	groupRaw, fieldRaw, ok := objectFields(value, s.GroupBy, s.Field)
	if !ok {
		p.Skipped++
		return
	}
	var acc *Acc
	switch {
	case s.GroupBy == "":
		acc = p.group("")
	case canonicalAsIs(groupRaw):
		acc = p.Groups[string(groupRaw)] // no allocation for a lookup
		if acc == nil {
			acc = p.group(string(groupRaw))
		}
	default:
		acc = p.group(groupKey(groupRaw))
	}
	if s.Op == OpCount && s.Field == "" {
		acc.Count++
		return
	}
	x, ok := number(fieldRaw)
	if !ok || math.IsInf(x, 0) || math.IsNaN(x) {
		p.NoField++
		return
	}
	acc.add(s, key, x)
}

// group returns g's accumulator, creating it.
func (p *Partial) group(g string) *Acc {
	a := p.Groups[g]
	if a == nil {
		a = &Acc{}
		p.Groups[g] = a
	}
	return a
}

func (a *Acc) add(s Spec, key []byte, x float64) {
	a.Count++
	a.Sum += x
	if a.Min == nil || x < *a.Min {
		v := x
		a.Min = &v
	}
	if a.Max == nil || x > *a.Max {
		v := x
		a.Max = &v
	}
	if s.Op == OpTopK {
		// Most records do not make the list: decide before copying the key.
		if n := len(a.Top); n == s.K && !(x > a.Top[n-1].Value || x == a.Top[n-1].Value && string(key) < a.Top[n-1].Key) {
			return
		}
		a.Top = insertTop(a.Top, Item{Key: string(key), Value: x}, s.K)
	}
}

// better orders topk items: larger value first, then smaller key, so
// ties resolve the same way on every node.
func better(a, b Item) bool {
	if a.Value != b.Value {
		return a.Value > b.Value
	}
	return a.Key < b.Key
}

func insertTop(top []Item, it Item, k int) []Item {
	i := sort.Search(len(top), func(i int) bool { return better(it, top[i]) })
	if i >= k {
		return top
	}
	top = append(top, Item{})
	copy(top[i+1:], top[i:])
	top[i] = it
	if len(top) > k {
		top = top[:k]
	}
	return top
}

// groupKey is the JSON text of a group-by value ("null" when absent), so
// 1 and "1" stay distinct groups. The text is canonical: spacing as
// json.Marshal writes it, object keys sorted, and numbers by their exact
// decimal value (canonicalNumber), so 1 and 1.0 are one group but two
// integers beyond float64's precision are not.
func groupKey(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "null"
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return "null"
	}
	b, err := json.Marshal(canonicalNumbers(v))
	if err != nil {
		return "null"
	}
	return string(b)
}

// canonicalNumbers rewrites every json.Number in v as canonicalNumber.
func canonicalNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		return json.Number(canonicalNumber(string(x)))
	case []any:
		for i := range x {
			x[i] = canonicalNumbers(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = canonicalNumbers(x[k])
		}
	}
	return v
}

// canonicalNumber returns the canonical text of the JSON number n by its
// exact decimal value, with every significant digit kept: plain notation
// for integers of up to 21 digits and for decimals from 1e-6 below 1e21
// (as json.Marshal writes a float64), else d.ddde±x. "-0" is "0".
func canonicalNumber(n string) string {
	neg := strings.HasPrefix(n, "-")
	n = strings.TrimPrefix(n, "-")
	mant, expText := n, ""
	if i := strings.IndexAny(n, "eE"); i >= 0 {
		mant, expText = n[:i], strings.TrimPrefix(n[i+1:], "+")
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return "0"
	}
	trimmed := strings.TrimRight(digits, "0")
	// The value is trimmed × 10^shift × 10^e.
	shift := int64(len(digits)-len(trimmed)) - int64(len(frac))
	digits = trimmed
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	e, err := strconv.ParseInt(expText, 10, 64)
	if expText == "" {
		e, err = 0, nil
	}
	if err != nil || e > maxPlainExp || e < -maxPlainExp {
		// An exponent this large cannot be written out in plain notation
		// (nor computed in an int64 without overflow): the exponent form,
		// computed exactly.
		x, ok := new(big.Int).SetString(expText, 10)
		if !ok {
			return b.String() + n // not a JSON number; keep its text
		}
		x.Add(x, big.NewInt(shift+int64(len(digits))-1))
		writeExpForm(&b, digits, x.String())
		return b.String()
	}
	exp := e + shift
	// point is where the decimal point falls in digits.
	point := int64(len(digits)) + exp
	switch {
	case exp >= 0 && point <= 21:
		b.WriteString(digits)
		b.WriteString(strings.Repeat("0", int(exp)))
	case exp < 0 && point > 0:
		b.WriteString(digits[:point])
		b.WriteByte('.')
		b.WriteString(digits[point:])
	case exp < 0 && point > -6:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", int(-point)))
		b.WriteString(digits)
	default:
		writeExpForm(&b, digits, strconv.FormatInt(point-1, 10))
	}
	return b.String()
}

// maxPlainExp bounds the exponents canonicalNumber computes with int64:
// far from overflow, and far beyond what plain notation is used for.
const maxPlainExp = 1 << 40

// writeExpForm writes d.ddd e±x for the significant digits and the
// decimal exponent x (in decimal, possibly negative).
func writeExpForm(b *strings.Builder, digits, x string) {
	b.WriteByte(digits[0])
	if len(digits) > 1 {
		b.WriteByte('.')
		b.WriteString(digits[1:])
	}
	b.WriteByte('e')
	if !strings.HasPrefix(x, "-") {
		b.WriteByte('+')
	}
	b.WriteString(x)
}

// Merge folds o into p.
func (p *Partial) Merge(s Spec, o *Partial) {
	p.Scanned += o.Scanned
	p.Skipped += o.Skipped
	p.NoField += o.NoField
	p.BytesScanned += o.BytesScanned
	for g, oa := range o.Groups {
		a := p.Groups[g]
		if a == nil {
			a = &Acc{}
			p.Groups[g] = a
		}
		a.Count += oa.Count
		a.Sum += oa.Sum
		if oa.Min != nil && (a.Min == nil || *oa.Min < *a.Min) {
			v := *oa.Min
			a.Min = &v
		}
		if oa.Max != nil && (a.Max == nil || *oa.Max > *a.Max) {
			v := *oa.Max
			a.Max = &v
		}
		for _, it := range oa.Top {
			a.Top = insertTop(a.Top, it, s.K)
		}
	}
}

// Result turns a (root) partial into the API's result: one value, or a
// list of Group in SortGroups order. min, max and
// avg of no numbers are null; topk is a list of {key, value}.
func (p *Partial) Result(s Spec) any {
	value := func(a *Acc) any {
		if a == nil {
			a = &Acc{}
		}
		switch s.Op {
		case OpCount:
			return a.Count
		case OpSum:
			return a.Sum
		case OpMin:
			return a.Min
		case OpMax:
			return a.Max
		case OpAvg:
			if a.Count == 0 {
				return nil
			}
			return a.Sum / float64(a.Count)
		case OpTopK:
			if a.Top == nil {
				return []Item{}
			}
			return a.Top
		}
		return nil
	}
	if s.GroupBy == "" {
		return value(p.Groups[""])
	}
	out := make([]Group, 0, len(p.Groups))
	for _, g := range SortGroups(keysOf(p.Groups)) {
		out = append(out, Group{Group: json.RawMessage(g), Value: value(p.Groups[g])})
	}
	return out
}

// Group is one group of a group_by answer: the group_by value (typed JSON,
// null for records without the field) and the aggregate over its records.
type Group struct {
	Group json.RawMessage `json:"group"`
	Value any             `json:"value"`
}

func keysOf(m map[string]*Acc) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// SortGroups orders groups (canonical JSON texts) as an answer lists
// them: numbers by value, then every other value by its JSON text
// (strings, arrays, false, true, objects), then null. It sorts in place
// and returns gs.
func SortGroups(gs []string) []string {
	rank := func(g string) (int, float64) {
		switch {
		case g == "null":
			return 2, 0
		case g != "" && (g[0] == '-' || g[0] >= '0' && g[0] <= '9'):
			f, _ := strconv.ParseFloat(g, 64) // ±Inf beyond float64: still ordered
			return 0, f
		}
		return 1, 0
	}
	sort.Slice(gs, func(i, j int) bool {
		ri, fi := rank(gs[i])
		rj, fj := rank(gs[j])
		switch {
		case ri != rj:
			return ri < rj
		case ri == 0 && fi != fj:
			return fi < fj
		}
		return gs[i] < gs[j]
	})
	return gs
}
