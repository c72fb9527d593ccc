package server

// RouteNames returns the names of the routes s registered.
func RouteNames(s *Server) []string { return append([]string(nil), s.routeNames...) }

// HasPolicy reports whether route name has an access policy.
func HasPolicy(name string) bool { _, ok := policies[name]; return ok }
