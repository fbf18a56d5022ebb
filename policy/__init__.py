"""Who is who and who may do what: institutions, users, roles, clients, nodes, rules, decisions."""
