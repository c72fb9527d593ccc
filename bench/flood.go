package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The floods of the hostile scenario and of the soak test: careless or
// hostile clients over plain HTTP, each on its own connection, as a script
// or a misbehaving service would be.

// FloodValue returns the value a flood writes under key: size bytes
// derived from the key, so a read-back can check it without keeping it.
func FloodValue(key string, size int) []byte {
	v := make([]byte, size)
	for i := range v {
		v[i] = key[i%len(key)] ^ byte(i>>8)
	}
	return v
}

// Writers is a closed loop of plain-HTTP writers: each puts a new key
// (Prefix + writer/sequence) with a FloodValue as soon as its previous put
// answered. A refused put (503 or 429) is not retried: the writer goes
// on with its next key at once, unless HonorRetryAfter.
type Writers struct {
	Addrs           []string // node addresses host:port; writer w uses Addrs[w mod len]
	N               int      // writers
	ValueBytes      int
	Prefix          string
	HonorRetryAfter bool
}

// WriteResult is what a Writers run saw.
type WriteResult struct {
	OK, Shed, Failed int
	Seconds          float64
	LatenciesMS      []float64 // of the acknowledged puts
	Acked            []string  // keys acknowledged (2xx)
	FirstError       string
}

// Rate returns acknowledged puts per second.
func (r WriteResult) Rate() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.OK) / r.Seconds
}

// Run writes for d, or until ctx ends.
func (w Writers) Run(ctx context.Context, d time.Duration) WriteResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var res WriteResult
	var wg sync.WaitGroup
	start := time.Now()
	for i := range w.N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true}}
			defer hc.CloseIdleConnections()
			addr := w.Addrs[i%len(w.Addrs)]
			var ok, shed, failed int
			var lat []float64
			var acked []string
			var firstErr string
			for seq := 0; ctx.Err() == nil; seq++ {
				key := fmt.Sprintf("%s%d/%d", w.Prefix, i, seq)
				req, _ := http.NewRequestWithContext(ctx, "PUT", "http://"+addr+"/v1/kv/"+key, strings.NewReader(string(FloodValue(key, w.ValueBytes))))
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failed++
						if firstErr == "" {
							firstErr = err.Error()
						}
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode/100 == 2:
					ok++
					lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
					acked = append(acked, key)
				case resp.StatusCode == 503 || resp.StatusCode == 429:
					shed++
					if w.HonorRetryAfter {
						_ = sleepCtx(ctx, time.Second)
					}
				default:
					failed++
					if firstErr == "" {
						firstErr = resp.Status
					}
				}
			}
			mu.Lock()
			res.OK, res.Shed, res.Failed = res.OK+ok, res.Shed+shed, res.Failed+failed
			res.LatenciesMS = append(res.LatenciesMS, lat...)
			res.Acked = append(res.Acked, acked...)
			if res.FirstError == "" {
				res.FirstError = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	return res
}

// VerifyAcked reads every key back (linearizable reads, 16 at a time)
// and returns how many are missing or hold another value than written.
func VerifyAcked(ctx context.Context, addr string, keys []string, valueBytes int) (missing, wrong int, err error) {
	var mu sync.Mutex
	var firstErr error
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 30 * time.Second}
			for {
				i := int(next.Add(1) - 1)
				if i >= len(keys) || ctx.Err() != nil {
					return
				}
				k := keys[i]
				var body []byte
				var status int
				for attempt := 0; ; attempt++ {
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/v1/kv/"+k+"?consistency=linearizable", nil)
					resp, err := hc.Do(req)
					if err == nil {
						body, _ = io.ReadAll(resp.Body)
						resp.Body.Close()
						status = resp.StatusCode
						if status != 503 {
							break
						}
					}
					if attempt == 20 {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("bench: reading back %s: status %d, %v", k, status, err)
						}
						mu.Unlock()
						return
					}
					_ = sleepCtx(ctx, 100*time.Millisecond)
				}
				mu.Lock()
				switch {
				case status == 404:
					missing++
				case status != 200 || string(body) != string(FloodValue(k, valueBytes)):
					wrong++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return missing, wrong, firstErr
}

// IdlePolls keeps N long polls open on prefixes nothing is written to,
// each on its own connection, each polling again with its cursor as soon
// as one answers.
type IdlePolls struct {
	Addr   string
	N      int
	Wait   time.Duration
	Prefix string

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	answers atomic.Int64
	late    atomic.Int64 // answered more than 2 s after their wait
	refused atomic.Int64 // 503/429
	failed  atomic.Int64
	maxLate atomic.Int64 // ms past the wait, largest
}

// PollStats is what the polls saw.
type PollStats struct {
	Answers, Late, Refused, Failed int64
	MaxLateMS                      int64
}

// Start opens the polls.
func (p *IdlePolls) Start(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(ctx)
	for i := range p.N {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
			defer hc.CloseIdleConnections()
			cursor := "now"
			for ctx.Err() == nil {
				q := url.Values{"prefix": {fmt.Sprintf("%s%d/", p.Prefix, i)}, "wait": {p.Wait.String()}, "cursor": {cursor}}
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.Addr+"/v1/feed?"+q.Encode(), nil)
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						p.failed.Add(1)
						_ = sleepCtx(ctx, 100*time.Millisecond)
					}
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if over := time.Since(t0) - p.Wait; over > 2*time.Second {
					p.late.Add(1)
					for {
						m := p.maxLate.Load()
						if over.Milliseconds() <= m || p.maxLate.CompareAndSwap(m, over.Milliseconds()) {
							break
						}
					}
				}
				switch resp.StatusCode {
				case 200:
					p.answers.Add(1)
					if c := jsonField(body, "cursor"); c != "" {
						cursor = c
					}
				case 503, 429:
					p.refused.Add(1)
					_ = sleepCtx(ctx, time.Second)
				default:
					p.failed.Add(1)
					_ = sleepCtx(ctx, 100*time.Millisecond)
				}
			}
		}()
	}
}

// Stop ends the polls and returns what they saw.
func (p *IdlePolls) Stop() PollStats {
	p.cancel()
	p.wg.Wait()
	return PollStats{Answers: p.answers.Load(), Late: p.late.Load(), Refused: p.refused.Load(),
		Failed: p.failed.Load(), MaxLateMS: p.maxLate.Load()}
}

// jsonField extracts a top-level string field from a small JSON object
// without decoding the rest (feed answers can be large).
func jsonField(body []byte, name string) string {
	s := string(body)
	i := strings.LastIndex(s, `"`+name+`":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(name)+4:]
	if j := strings.IndexByte(s, '"'); j >= 0 {
		return s[:j]
	}
	return ""
}

// DeadSockets opens n WebSocket feed streams under prefix that never read
// a byte (a small receive window, so the node's sends block soon). Close
// closes them.
type DeadSockets struct {
	conns []*websocket.Conn
}

// OpenDeadSockets dials the streams from the loopback address from ("":
// any), so that they count as another client than floods from elsewhere;
// those the node refuses are counted in refused.
func OpenDeadSockets(ctx context.Context, addr, from string, n int, prefix string) (d *DeadSockets, refused int, err error) {
	nd := &net.Dialer{}
	if from != "" {
		ip := net.ParseIP(from)
		if ip == nil || !ip.IsLoopback() {
			return nil, 0, fmt.Errorf("bench: %q is not a loopback address", from)
		}
		nd.LocalAddr = &net.TCPAddr{IP: ip}
	}
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := nd.DialContext(ctx, network, a)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(128 << 10)
		}
		return c, err
	}}
	d = &DeadSockets{}
	u := "ws://" + addr + "/v1/feed?" + url.Values{"prefix": {prefix}}.Encode()
	for range n {
		c, resp, err := dialer.DialContext(ctx, u, nil)
		if err != nil {
			if resp != nil && (resp.StatusCode == 503 || resp.StatusCode == 429) {
				refused++
				continue
			}
			d.Close()
			return nil, refused, fmt.Errorf("bench: websocket: %w", err)
		}
		d.conns = append(d.conns, c)
	}
	return d, refused, nil
}

// Close closes every stream.
func (d *DeadSockets) Close() {
	for _, c := range d.conns {
		c.Close()
	}
}

// StalledUploads sends n uploads of a size-byte function module that stop
// halfway and never send another byte, each on its own connection, and
// records when the node answers or closes each.
type StalledUploads struct {
	Addr string
	N    int
	Size int

	mu      sync.Mutex
	wg      sync.WaitGroup
	stalled []time.Time     // when each stalled (zero: refused before)
	ended   []time.Duration // from stall (or start) to the node's answer or close
	status  []int
	conns   []net.Conn
	started time.Time
}

// UploadStats is what the uploads saw: Cut are those the node ended
// (answer or close) after they stalled, Refused those answered before
// they could stall (503 with the budget full), Open those still open.
type UploadStats struct {
	Cut, Refused, Open int
	CutSeconds         []float64
	Statuses           map[int]int
}

// Start sends the uploads.
func (u *StalledUploads) Start(ctx context.Context) {
	u.started = time.Now()
	u.stalled = make([]time.Time, u.N)
	u.ended = make([]time.Duration, u.N)
	u.status = make([]int, u.N)
	u.conns = make([]net.Conn, u.N)
	for i := range u.N {
		u.ended[i] = -1
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", u.Addr)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[i] = c
			u.mu.Unlock()
			done := make(chan struct{})
			go func() { // the node's answer, or its close
				defer close(done)
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				var code int
				if f := strings.Fields(line); len(f) >= 2 {
					fmt.Sscan(f[1], &code)
				}
				_, _ = io.Copy(io.Discard, r)
				u.mu.Lock()
				u.status[i] = code
				from := u.stalled[i]
				if from.IsZero() {
					from = u.started
				}
				u.ended[i] = time.Since(from)
				u.mu.Unlock()
			}()
			fmt.Fprintf(c, "PUT /v1/functions/stalled-%d HTTP/1.1\r\nHost: %s\r\nContent-Type: application/wasm\r\nContent-Length: %d\r\n\r\n", i, u.Addr, u.Size)
			chunk := make([]byte, 64<<10)
			for sent := 0; sent < u.Size/2; sent += len(chunk) {
				_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.Write(chunk); err != nil {
					<-done
					return // refused or cut while sending
				}
			}
			u.mu.Lock()
			if u.ended[i] < 0 {
				u.stalled[i] = time.Now()
			}
			u.mu.Unlock()
			<-done
		}()
	}
}

// Wait waits until every upload has ended or timeout passes, then closes
// the connections and returns what happened.
func (u *StalledUploads) Wait(ctx context.Context, timeout time.Duration) UploadStats {
	finished := make(chan struct{})
	go func() { u.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(timeout):
	case <-ctx.Done():
	}
	u.mu.Lock()
	st := UploadStats{Statuses: map[int]int{}}
	for i := range u.N {
		switch {
		case u.ended[i] < 0:
			st.Open++
		case u.stalled[i].IsZero():
			st.Refused++
			st.Statuses[u.status[i]]++
		default:
			st.Cut++
			st.Statuses[u.status[i]]++
			st.CutSeconds = append(st.CutSeconds, u.ended[i].Seconds())
		}
	}
	for _, c := range u.conns {
		if c != nil {
			c.Close()
		}
	}
	u.mu.Unlock()
	<-finished
	return st
}

// RSSSampler records the largest resident size of a process.
type RSSSampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}
	max  atomic.Int64
	err  atomic.Value
}

// SampleRSS samples pid's VmRSS every 100 ms until Stop.
func SampleRSS(pid int) *RSSSampler {
	s := &RSSSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := rssBytes(pid); err == nil {
				if v > s.max.Load() {
					s.max.Store(v)
				}
			} else {
				s.err.Store(err)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the largest size seen.
func (s *RSSSampler) Stop() (int64, error) {
	close(s.stop)
	<-s.done
	if s.max.Load() == 0 {
		if err, ok := s.err.Load().(error); ok {
			return 0, err
		}
		return 0, errors.New("bench: no RSS sample")
	}
	return s.max.Load(), nil
}

// metricValue reads one unlabelled series from a node's /metrics.
func metricValue(ctx context.Context, addr, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f, nil
			}
		}
	}
	return 0, fmt.Errorf("bench: metric %s not found", name)
}

// RSS returns a process's resident memory (VmRSS), bytes.
func RSS(pid int) (int64, error) { return rssBytes(pid) }

// ServerLatency returns quantiles (histogram_quantile's interpolation) of
// the handler time of route's 2xx answers, summed over the nodes at addrs,
// from lambdadb_http_request_duration_seconds, in milliseconds; before is
// the same histogram read earlier (nil: from zero), so a phase can be
// measured alone.
func ServerLatency(ctx context.Context, addrs []string, route string, before map[float64]float64, qs ...float64) (out []float64, now map[float64]float64, err error) {
	now = map[float64]float64{}
	for _, a := range addrs {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+a+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, fmt.Errorf("bench: metrics: %w", err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("bench: metrics of %s: %w", a, err)
		}
		fam := fams["lambdadb_http_request_duration_seconds"]
		if fam == nil {
			continue
		}
		for _, m := range fam.GetMetric() {
			var r, code string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					r = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			if r != route || !strings.HasPrefix(code, "2") {
				continue
			}
			for _, b := range m.GetHistogram().GetBucket() {
				now[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			}
		}
	}
	var bounds []float64
	for b := range now {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	delta := make([]float64, len(bounds))
	for i, b := range bounds {
		delta[i] = now[b] - before[b]
	}
	for _, q := range qs {
		out = append(out, 1000*bucketQuantile(q, bounds, delta))
	}
	return out, now, nil
}

// bucketQuantile interpolates quantile q in cumulative bucket counts.
func bucketQuantile(q float64, bounds, cum []float64) float64 {
	if len(cum) == 0 || cum[len(cum)-1] == 0 {
		return math.NaN()
	}
	rank := q * cum[len(cum)-1]
	lower, prev := 0.0, 0.0
	for i, b := range bounds {
		if cum[i] >= rank {
			if math.IsInf(b, 1) {
				return lower
			}
			if cum[i] == prev {
				return b
			}
			return lower + (b-lower)*(rank-prev)/(cum[i]-prev)
		}
		lower, prev = b, cum[i]
	}
	return bounds[len(bounds)-1]
}
