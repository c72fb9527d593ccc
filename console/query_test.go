package console

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestTableOf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		result string
		want   *resultTable
	}{
		{"groups", `[{"group":"eu","value":30.5},{"group":null,"value":7}]`,
			&resultTable{Columns: []string{"group", "value"}, Rows: [][]string{{`"eu"`, "30.5"}, {"null", "7"}}}},
		{"topk", `[{"key":"orders/2","value":20.5}]`,
			&resultTable{Columns: []string{"key", "value"}, Rows: [][]string{{`"orders/2"`, "20.5"}}}},
		{"JSON text as sent (the template escapes it)", `[{"group":"<b>x</b>","value":1}]`,
			&resultTable{Columns: []string{"group", "value"}, Rows: [][]string{{`"<b>x</b>"`, "1"}}}},
		{"fields differ", `[{"group":"a","value":1},{"value":2,"group":"b"}]`, nil},
		{"not objects", `[1,2]`, nil},
		{"empty", `[]`, nil},
		{"scalar", `4`, nil},
		{"object", `{"eu":1}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tableOf(json.RawMessage(tc.result))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("tableOf(%s) = %+v; want %+v", tc.result, got, tc.want)
			}
		})
	}
}
