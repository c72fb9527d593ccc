package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"lambdadb/client"
)

var queryCommand = &command{
	name:  "query",
	short: "aggregate or run a function across all shards",
	args: "[--server URL] [--prefix P] [--start K] [--end K]\n" +
		"       (--count | --sum F | --min F | --max F | --avg F | --topk F [--k 10] | --fn NAME)\n" +
		"       [--group-by F] [--consistency C] [--timeout D] [--json]",
	summary: "Run one scatter/gather query over the keys beginning with --prefix (within\n" +
		"[--start, --end)): a leaf on every shard, combined up a tree of nodes.\n" +
		"\n" +
		"--count, --sum, --min, --max, --avg and --topk aggregate the top-level numeric\n" +
		"field F of JSON object values (other values are skipped); --group-by G does it\n" +
		"per value of the top-level field G (null: records without G). --fn NAME runs a\n" +
		"deployed function's Leaf on every shard and its Combine over the results.\n" +
		"\n" +
		"Prints one value, a GROUP/VALUE table (groups: numbers, then text, then null),\n" +
		"or for --topk a KEY/VALUE table (with a GROUP column when grouped); for --fn\n" +
		"the result's JSON, indented (a JSON string is printed as its text; output that\n" +
		"is not JSON arrives base64-encoded). A line of statistics goes to stderr.\n" +
		"--json prints the whole JSON response instead. A query that cannot read every\n" +
		"shard fails (503 incomplete, naming the shards); it never prints a partial answer.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		prefix := fs.String("prefix", "", "only keys beginning with `P`")
		start := fs.String("start", "", "first `key` (inclusive)")
		end := fs.String("end", "", "end `key` (exclusive)")
		count := fs.Bool("count", false, "count the JSON object values")
		fields := []struct {
			op    string
			field *string
		}{
			{client.OpSum, fs.String("sum", "", "sum the numeric `field`")},
			{client.OpMin, fs.String("min", "", "the smallest value of the numeric `field`")},
			{client.OpMax, fs.String("max", "", "the largest value of the numeric `field`")},
			{client.OpAvg, fs.String("avg", "", "the mean of the numeric `field`")},
			{client.OpTopK, fs.String("topk", "", "the records with the largest values of the numeric `field`")},
		}
		k := fs.Int("k", 10, "how many records --topk lists, `N` (1..10000)")
		groupBy := fs.String("group-by", "", "aggregate per value of the top-level `field`")
		fn := fs.String("fn", "", "run function `NAME` (it must register Leaf and Combine)")
		consistency := fs.String("consistency", "", "each shard's read `level`: linearizable, session or stale (default linearizable)")
		timeout := fs.String("timeout", "", "give up after `duration`, such as 30s (default: the server's, 2m)")
		asJSON := fs.Bool("json", false, "print the JSON response")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			q := client.QueryRequest{Prefix: *prefix, Start: *start, End: *end,
				Consistency: client.Consistency(*consistency)}
			if *timeout != "" {
				d, err := time.ParseDuration(*timeout)
				if err != nil || d <= 0 {
					return usagef("--timeout: want a positive duration such as 30s or 500ms")
				}
				q.Timeout = d
			}
			var given []string
			if *count {
				given = append(given, "--count")
				q.Aggregate = &client.Aggregate{Op: client.OpCount}
			}
			for _, f := range fields {
				if !isSet(fs, f.op) {
					continue
				}
				given = append(given, "--"+f.op)
				if *f.field == "" {
					return usagef("--%s needs a field name", f.op)
				}
				q.Aggregate = &client.Aggregate{Op: f.op, Field: *f.field}
			}
			if isSet(fs, "fn") {
				given = append(given, "--fn")
				if *fn == "" {
					return usagef("--fn needs a function name")
				}
				q.Function = *fn
			}
			switch {
			case len(given) == 0:
				return usagef("give one of --count, --sum F, --min F, --max F, --avg F, --topk F or --fn NAME")
			case len(given) > 1:
				return usagef("give only one of %s", strings.Join(given, ", "))
			case isSet(fs, "k") && (q.Aggregate == nil || q.Aggregate.Op != client.OpTopK):
				return usagef("--k goes with --topk")
			case *k < 1:
				return usagef("--k must be positive")
			case isSet(fs, "group-by") && q.Function != "":
				return usagef("--group-by goes with an aggregate, not --fn")
			case isSet(fs, "group-by") && *groupBy == "":
				return usagef("--group-by needs a field name")
			}
			if q.Aggregate != nil {
				q.Aggregate.GroupBy = *groupBy
				if q.Aggregate.Op == client.OpTopK {
					q.Aggregate.K = *k
				}
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			res, err := cl.Query(ctx, q)
			if err != nil {
				return err
			}
			if *asJSON {
				b, err := json.Marshal(res)
				if err != nil {
					return err
				}
				_, err = c.stdout.Write(append(b, '\n'))
				return err
			}
			if q.Function != "" {
				err = printFnResult(c.stdout, res.Result)
			} else {
				err = printAggregate(c.stdout, *q.Aggregate, res.Result)
			}
			if err != nil {
				return err
			}
			field := ""
			if q.Aggregate != nil {
				field = q.Aggregate.Field
			}
			fmt.Fprintln(c.stderr, statsLine(res.Stats, field))
			return nil
		}
	},
}

// printFnResult prints a function query's result: JSON indented, a JSON
// string as its text.
func printFnResult(w io.Writer, result json.RawMessage) error {
	var s string
	if json.Unmarshal(result, &s) == nil {
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		_, err := io.WriteString(w, s)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, result, "", "  "); err != nil {
		return fmt.Errorf("the server's result is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// topItem is a topk entry with its value as the server formatted it.
type topItem struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// printAggregate prints a built-in aggregate's result: one value, or a
// table.
func printAggregate(w io.Writer, agg client.Aggregate, result json.RawMessage) error {
	bad := func(err error) error { return fmt.Errorf("unexpected %s result %.200s: %w", agg.Op, result, err) }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch {
	case agg.GroupBy == "" && agg.Op != client.OpTopK:
		_, err := fmt.Fprintf(w, "%s\n", result)
		return err
	case agg.GroupBy == "":
		var top []topItem
		if err := json.Unmarshal(result, &top); err != nil {
			return bad(err)
		}
		fmt.Fprintln(tw, "KEY\tVALUE")
		for _, it := range top {
			fmt.Fprintf(tw, "%s\t%s\n", cell(it.Key), it.Value)
		}
	case agg.Op == client.OpTopK:
		var groups []struct {
			Group json.RawMessage `json:"group"`
			Value []topItem       `json:"value"`
		}
		if err := json.Unmarshal(result, &groups); err != nil {
			return bad(err)
		}
		fmt.Fprintln(tw, "GROUP\tKEY\tVALUE")
		for _, g := range groups {
			for _, it := range g.Value {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", groupText(string(g.Group)), cell(it.Key), it.Value)
			}
		}
	default:
		var groups []client.Group
		if err := json.Unmarshal(result, &groups); err != nil {
			return bad(err)
		}
		fmt.Fprintln(tw, "GROUP\tVALUE")
		for _, g := range groups { // in the server's order
			fmt.Fprintf(tw, "%s\t%s\n", groupText(string(g.Group)), g.Value)
		}
	}
	return tw.Flush()
}

// groupText shows a group (the group-by value as JSON text): a JSON
// string as its text, unless that text would read as another value (such
// as "1" or "null") or is empty, blank-edged or unprintable.
func groupText(raw string) string {
	var s string
	if json.Unmarshal([]byte(raw), &s) != nil || s == "" || strings.TrimSpace(s) != s ||
		json.Valid([]byte(s)) || cell(s) != s {
		return raw
	}
	return s
}

// cell quotes s if it holds characters that would break a table row.
func cell(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// statsLine summarizes a query's statistics in one line, such as
// "16 shards on 3 nodes, 3 levels: 1,000,000 records (12 skipped),
// 210.3 MB scanned, 4.1 KB gathered, 812 ms".
func statsLine(st client.QueryStats, field string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %s, %s: %s", plural(st.Shards, "shard"), plural(st.Nodes, "node"),
		plural(st.Levels, "level"), plural(st.RecordsScanned, "record"))
	var notes []string
	if st.RecordsSkipped > 0 {
		notes = append(notes, thousands(st.RecordsSkipped)+" skipped")
	}
	if st.RecordsWithoutField > 0 && field != "" {
		notes = append(notes, thousands(st.RecordsWithoutField)+" without "+field)
	}
	if len(notes) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(notes, ", "))
	}
	fmt.Fprintf(&b, ", %s scanned, %s gathered, %s", fmtBytes(st.BytesScanned), fmtBytes(st.BytesGathered), fmtMS(st.ElapsedMS))
	switch {
	case st.Retries == 1:
		b.WriteString(", 1 retry")
	case st.Retries > 1:
		fmt.Fprintf(&b, ", %s retries", thousands(uint64(st.Retries)))
	}
	if st.Hedges > 0 {
		fmt.Fprintf(&b, ", %s", plural(st.Hedges, "hedge"))
	}
	return b.String()
}

// plural formats n things, with thousands separators.
func plural[N int | uint64](n N, thing string) string {
	s := thousands(uint64(n)) + " " + thing
	if n != 1 {
		s += "s"
	}
	return s
}

// thousands formats n with commas between groups of three digits.
func thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// fmtBytes formats a byte count with decimal units: 512 B, 4.1 KB, 210.3 MB.
func fmtBytes(n uint64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	f, unit := float64(n), -1
	for f >= 999.95 && unit < len("KMGTPE")-1 {
		f /= 1000
		unit++
	}
	return fmt.Sprintf("%.1f %cB", f, "KMGTPE"[unit])
}

// fmtMS formats milliseconds: 0.4 ms, 812 ms, 12.3 s.
func fmtMS(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 10000:
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.1f s", ms/1000)
}
