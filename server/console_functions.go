package server

import (
	"net/http"
	"time"

	"lambdadb/console"
	"lambdadb/lambda"
	"lambdadb/namespace"
)

// consoleFunctions serves the console's functions pages
// (console.Functions) through the code of the API's function routes:
// the same registry reads, the same cluster-wide merges, the caller's
// namespace and, towards other nodes, the caller's credential.
type consoleFunctions struct{ s *Server }

// consoleFns returns the console's view of the functions, nil without
// functions.
func (s *Server) consoleFns() console.Functions {
	if s.fns == nil {
		return nil
	}
	return consoleFunctions{s}
}

// canFunctions applies the policy of the API's function route named route
// to the console request r.
func canFunctions(r *http.Request, route string) bool {
	if principalOf(r.Context()) == nil {
		return true // insecure mode
	}
	pol, ok := policies[route]
	return ok && check(r, pol) == nil
}

func (c consoleFunctions) List(r *http.Request) ([]console.FunctionStats, error) {
	fns, err := c.s.namespaceFunctions(r.Context(), false)
	if err != nil {
		return nil, err
	}
	out := make([]console.FunctionStats, len(fns))
	for i, f := range fns {
		out[i] = console.FunctionStats{Function: f.Function, Stats: f.Stats}
	}
	return out, nil
}

func (c consoleFunctions) Get(r *http.Request, name string) (console.FunctionStats, error) {
	stored := namespace.Name(namespace.From(r.Context()), name)
	f, err := c.s.fns.Get(r.Context(), stored)
	if err != nil {
		return console.FunctionStats{}, err
	}
	st, per := c.s.clusterStats(r.Context(), f)
	out := console.FunctionStats{Function: userFunction(f), Stats: st, Nodes: map[string]console.NodeStats{}}
	for id, ns := range per {
		out.Nodes[id] = console.NodeStats{Stats: ns.Stats, Error: ns.Error}
	}
	return out, nil
}

func (c consoleFunctions) Series(r *http.Request, name string) (time.Duration, []lambda.Point, error) {
	stored := namespace.Name(namespace.From(r.Context()), name)
	if _, err := c.s.fns.Get(r.Context(), stored); err != nil {
		return 0, nil, err
	}
	v := c.s.clusterSeries(r.Context(), stored, name)
	return time.Duration(v.IntervalMS) * time.Millisecond, v.Points, nil
}

func (c consoleFunctions) Logs(r *http.Request, name string) ([]lambda.LogLine, error) {
	stored := namespace.Name(namespace.From(r.Context()), name)
	return c.s.clusterLogs(r.Context(), stored, name), nil
}

func (c consoleFunctions) Deploys(r *http.Request, name string) ([]lambda.Deploy, error) {
	return c.s.fns.Deploys(r.Context(), namespace.Name(namespace.From(r.Context()), name))
}
