package scatter

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestObjectFieldsInvalidUTF8Key: encoding/json replaces invalid UTF-8
// in object keys with U+FFFD (json.Valid accepts the bytes), so a field
// named "\ufffd" matches the raw key "\xff"; objectFields must agree.
func TestObjectFieldsInvalidUTF8Key(t *testing.T) {
	v := []byte("{\"\xff\":5}")
	s := Spec{Op: OpSum, Field: "\ufffd"}
	got, want := NewPartial(), NewPartial()
	got.Add(s, []byte("k"), v)
	addReference(want, s, "k", v)
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("got %s\nwant %s", g, w)
	}
}
