package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Report is one LambdaBench run: the machine it ran on and one section per
// scenario. It is written as report.json and report.md.
type Report struct {
	Suite     string            `json:"suite"` // "LambdaBench"
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Quick     bool              `json:"quick"`
	Command   string            `json:"command"` // how this run was started
	Machine   Machine           `json:"machine"`
	Scenarios []*ScenarioReport `json:"scenarios"`
}

// Machine describes where a run happened and what it ran.
type Machine struct {
	CPU         string  `json:"cpu"`
	Cores       int     `json:"cores"`
	RAMBytes    uint64  `json:"ram_bytes"`
	OS          string  `json:"os"`
	Kernel      string  `json:"kernel"`
	GoVersion   string  `json:"go_version"`
	Commit      string  `json:"lambdadb_commit"` // git HEAD, "-dirty" when the tree has changes
	EtcdVersion string  `json:"etcd_version"`    // "" when etcd was not found
	Python      string  `json:"python_version"`  // "" when python3 was not found
	LoadAvg1    float64 `json:"load_avg_1m"`     // when the run started: other work on the machine
}

// Summary is a one-line description of the machine.
func (m Machine) Summary() string {
	s := fmt.Sprintf("%s, %d cores, %.1f GiB RAM, %s (kernel %s), %s, lambdadb %s",
		m.CPU, m.Cores, float64(m.RAMBytes)/(1<<30), m.OS, m.Kernel, m.GoVersion, m.Commit)
	if m.EtcdVersion != "" {
		s += ", etcd " + m.EtcdVersion
	}
	return s + fmt.Sprintf(", load average %.2f at the start", m.LoadAvg1)
}

// ScenarioReport is what one scenario measured, how, and how to rerun it.
// Names of scenarios and metrics stay stable so runs can be compared.
type ScenarioReport struct {
	Name     string    `json:"name"`
	Title    string    `json:"title"`
	Measures string    `json:"measures"` // what the scenario measures
	Method   string    `json:"method"`   // how: processes, client, protocol
	Params   []Param   `json:"params"`
	Metrics  []Metric  `json:"metrics"`
	Tables   []Table   `json:"tables,omitempty"`
	Plots    []string  `json:"plots,omitempty"` // file names in the report's directory
	Paper    string    `json:"paper,omitempty"` // how the paper's numbers compare
	Notes    []string  `json:"notes,omitempty"`
	Rerun    string    `json:"rerun"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	// LoadBefore and LoadAfter are the machine's 1-minute load average
	// when the scenario started and ended: other work skews the numbers.
	LoadBefore float64 `json:"load_before"`
	LoadAfter  float64 `json:"load_after"`
	Error      string  `json:"error,omitempty"`
	Data       any     `json:"data,omitempty"` // the raw results
}

// Param is one parameter of a scenario.
type Param struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// Metric is one measured number. A value that could not be measured is
// NaN in memory and null in JSON.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// MarshalJSON writes a non-finite value as null.
func (m Metric) MarshalJSON() ([]byte, error) {
	var v any = m.Value
	if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
		v = nil
	}
	return json.Marshal(struct {
		Name  string `json:"name"`
		Value any    `json:"value"`
		Unit  string `json:"unit"`
	}{m.Name, v, m.Unit})
}

// Table is a small table for the Markdown report.
type Table struct {
	Title   string     `json:"title"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
}

// Param appends a parameter.
func (s *ScenarioReport) Param(name string, value any) {
	s.Params = append(s.Params, Param{name, value})
}

// Metric appends a metric.
func (s *ScenarioReport) Metric(name string, value float64, unit string) {
	s.Metrics = append(s.Metrics, Metric{name, value, unit})
}

// Note appends a note.
func (s *ScenarioReport) Note(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// Lookup returns the value of the named metric and whether it exists.
func (s *ScenarioReport) Lookup(name string) (float64, bool) {
	for _, m := range s.Metrics {
		if m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

// Write writes report.json and report.md into dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encoding report.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), r.Markdown(), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// Markdown renders the report.
func (r *Report) Markdown() []byte {
	var b bytes.Buffer
	mode := "full"
	if r.Quick {
		mode = "quick"
	}
	fmt.Fprintf(&b, "# %s report, %s UTC (%s sizes)\n\n", r.Suite, r.Started.UTC().Format("2006-01-02 15:04"), mode)
	fmt.Fprintf(&b, "Command: `%s`. Took %s.\n\n", r.Command, r.Finished.Sub(r.Started).Round(time.Second))
	m := r.Machine
	b.WriteString("| Machine | |\n|---|---|\n")
	for _, row := range [][2]string{
		{"CPU", m.CPU}, {"cores", strconv.Itoa(m.Cores)},
		{"RAM", fmt.Sprintf("%.1f GiB", float64(m.RAMBytes)/(1<<30))},
		{"OS", m.OS + " (kernel " + m.Kernel + ")"}, {"Go", m.GoVersion},
		{"lambdadb commit", m.Commit}, {"etcd", orDash(m.EtcdVersion)}, {"python3", orDash(m.Python)},
		{"load average (1 min) at the start", fmt.Sprintf("%.2f", m.LoadAvg1)},
	} {
		fmt.Fprintf(&b, "| %s | %s |\n", row[0], mdEscape(row[1]))
	}
	b.WriteString("\n| Scenario | Headline | Time |\n|---|---|---|\n")
	for _, s := range r.Scenarios {
		head := "—"
		if s.Error != "" {
			head = "**failed**: " + mdEscape(firstLine(s.Error))
		} else if len(s.Metrics) > 0 {
			head = formatMetric(s.Metrics[0])
		}
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s | %.0f s |\n", s.Name, s.Name, head, s.Seconds)
	}
	for _, s := range r.Scenarios {
		s.markdown(&b, m)
	}
	return b.Bytes()
}

func (s *ScenarioReport) markdown(b *bytes.Buffer, m Machine) {
	fmt.Fprintf(b, "\n<a id=\"%s\"></a>\n## `%s` — %s\n\n", s.Name, s.Name, s.Title)
	if s.Measures != "" {
		fmt.Fprintf(b, "**Measures.** %s\n\n", s.Measures)
	}
	if s.Method != "" {
		fmt.Fprintf(b, "**Method.** %s\n\n", s.Method)
	}
	fmt.Fprintf(b, "**Machine.** %s; load average %.2f when this scenario started, %.2f when it ended (its own processes count too).\n\n",
		mdEscape(m.Summary()), s.LoadBefore, s.LoadAfter)
	if s.Error != "" {
		fmt.Fprintf(b, "**Failed** after %.0f s: `%s`\n\n", s.Seconds, strings.ReplaceAll(s.Error, "`", "'"))
	}
	if len(s.Params) > 0 {
		b.WriteString("| Parameter | Value |\n|---|---|\n")
		for _, p := range s.Params {
			fmt.Fprintf(b, "| %s | %s |\n", mdEscape(p.Name), mdEscape(fmt.Sprint(p.Value)))
		}
		b.WriteString("\n")
	}
	if len(s.Metrics) > 0 {
		b.WriteString("| Metric | Value |\n|---|---|\n")
		for _, mt := range s.Metrics {
			fmt.Fprintf(b, "| %s | %s |\n", mt.Name, formatValue(mt.Value, mt.Unit))
		}
		b.WriteString("\n")
	}
	for _, t := range s.Tables {
		if t.Title != "" {
			fmt.Fprintf(b, "%s:\n\n", t.Title)
		}
		b.WriteString("| " + strings.Join(t.Columns, " | ") + " |\n|")
		b.WriteString(strings.Repeat("---|", len(t.Columns)) + "\n")
		for _, row := range t.Rows {
			esc := make([]string, len(row))
			for i, c := range row {
				esc[i] = mdEscape(c)
			}
			b.WriteString("| " + strings.Join(esc, " | ") + " |\n")
		}
		b.WriteString("\n")
	}
	for _, p := range s.Plots {
		fmt.Fprintf(b, "![%s](%s)\n\n", p, p)
	}
	if s.Paper != "" {
		fmt.Fprintf(b, "**The paper.** %s\n\n", s.Paper)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	if len(s.Notes) > 0 {
		b.WriteString("\n")
	}
	fmt.Fprintf(b, "Rerun: `%s` (took %.0f s)\n", s.Rerun, s.Seconds)
}

// formatMetric renders "name: value unit".
func formatMetric(m Metric) string { return m.Name + ": " + formatValue(m.Value, m.Unit) }

// formatValue renders a value with about three significant digits.
func formatValue(v float64, unit string) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	var s string
	switch a := math.Abs(v); {
	case a == math.Trunc(a) && a < 1e15:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		s = strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	default:
		s = strconv.FormatFloat(v, 'g', 3, 64)
	}
	if unit == "" {
		return s
	}
	return s + " " + unit
}

// fmtCounts renders counts by name, largest first: "warm 396, restart 4".
func fmtCounts[N int | uint64](m map[string]N) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// CollectMachine describes this machine and the binaries a run uses:
// etcdBin and python may be "" (not available).
func CollectMachine(ctx context.Context, etcdBin, python string) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Commit: gitCommit(ctx)}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if m.CPU == "" {
		m.CPU = runtime.GOARCH
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				m.RAMBytes = kb << 10
			}
		}
	}
	m.OS = runtime.GOOS
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadAvg1 = LoadAvg()
	if etcdBin != "" {
		m.EtcdVersion = EtcdVersion(ctx, etcdBin)
	}
	if python != "" {
		if out, err := commandOutput(ctx, python, "--version"); err == nil {
			m.Python = strings.TrimPrefix(strings.TrimSpace(out), "Python ")
		}
	}
	return m
}

// EtcdVersion returns the version etcdBin reports ("" if it does not run).
func EtcdVersion(ctx context.Context, etcdBin string) string {
	out, err := commandOutput(ctx, etcdBin, "--version")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "etcd Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// LoadAvg returns the machine's 1-minute load average (0 if unknown).
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func gitCommit(ctx context.Context) string {
	head, err := commandOutput(ctx, "git", "rev-parse", "--short=12", "HEAD")
	if err != nil {
		return "unknown (not a git checkout)"
	}
	c := strings.TrimSpace(head)
	if st, err := commandOutput(ctx, "git", "status", "--porcelain", "--untracked-files=no"); err == nil && strings.TrimSpace(st) != "" {
		c += "-dirty"
	}
	return c
}

func commandOutput(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
