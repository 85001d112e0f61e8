//! Who may call what: the roles a certificate grants.
//!
//! A role is part of the wire contract between the CA that issues a
//! cluster's certificates (`shadowctl certs`) and the nodes that check
//! them: a certificate grants a role by carrying the DNS subject
//! alternative name `<role>.role.shadowstore`. Nodes verify the chain
//! against the cluster CA (rustls) and then ask webpki whether the
//! certificate is valid for each role's name, so no X.509 parsing of our
//! own is involved. The names cannot collide with a real host: the
//! `shadowstore` top-level domain does not exist.
//!
//! Client roles are ordered: an admin may do what a writer may, a writer
//! what a reader may. `Node` is separate: it is what peers present to
//! each other and grants the node-to-node service only.

/// A role a certificate grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads, lists, status, placement and demand views, routing.
    Reader,
    /// A reader that may also put and delete variants.
    Writer,
    /// A writer that may also create and delete resources, change the
    /// placement configuration and act on shadows (add, remove, pin,
    /// halt, resume, promote, roll back).
    Admin,
    /// A cluster node: the `Peer` service (Raft, shards, joins, demand).
    Node,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Writer, Role::Admin, Role::Node];

    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The DNS subject alternative name that grants this role.
    pub fn subject_name(self) -> &'static str {
        match self {
            Role::Reader => "reader.role.shadowstore",
            Role::Writer => "writer.role.shadowstore",
            Role::Admin => "admin.role.shadowstore",
            Role::Node => "node.role.shadowstore",
        }
    }

    /// Whether holding `self` allows what `required` allows.
    pub fn satisfies(self, required: Role) -> bool {
        if self == Role::Node || required == Role::Node {
            return self == required;
        }
        self >= required
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The role each `ShadowStore` method needs (`method` is the gRPC method
/// name, e.g. `Put`). Methods not listed need `Reader`.
pub fn client_method_role(method: &str) -> Role {
    match method {
        "CreateResource" | "DeleteResource" | "SetPlacementConfig" | "AddShadow" | "ShadowAction" => Role::Admin,
        "Put" | "PutStream" | "Delete" => Role::Writer,
        _ => Role::Reader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_roles_are_ordered_and_node_stands_apart() {
        assert!(Role::Admin.satisfies(Role::Writer) && Role::Admin.satisfies(Role::Reader));
        assert!(Role::Writer.satisfies(Role::Reader) && !Role::Writer.satisfies(Role::Admin));
        assert!(!Role::Reader.satisfies(Role::Writer));
        assert!(!Role::Node.satisfies(Role::Reader) && !Role::Admin.satisfies(Role::Node));
        assert!(Role::Node.satisfies(Role::Node));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.name()), Some(r));
            assert!(r.subject_name().starts_with(r.name()));
        }
        assert_eq!(client_method_role("Put"), Role::Writer);
        assert_eq!(client_method_role("ShadowAction"), Role::Admin);
        assert_eq!(client_method_role("Get"), Role::Reader);
    }
}
