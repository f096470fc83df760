//! The router's route table. `http::router` declares its routes through [`Routes`] and the
//! method functions here ([`get`], [`post`], ...), which have the shapes of axum's and build the
//! same `MethodRouter`s, but also record every (method, path) pair. The recorded table
//! ([`super::route_table`]) is what the OpenAPI document (`http::openapi`) is checked against,
//! so a route added to the router without a description in the contract fails a test.

use std::convert::Infallible;

use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, Route};
use axum::Router;
use tower::{Layer, Service};

/// One served operation: method and path as declared (axum's `{param}` syntax, full path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteEntry {
    pub method: Method,
    pub path: String,
}

/// The handlers of one path, with the methods they serve.
pub struct Methods<S> {
    router: MethodRouter<S>,
    methods: Vec<Method>,
}

macro_rules! method_fns {
    ($($name:ident => $method:ident),+ $(,)?) => {
        $(
            /// As axum's function of the same name, recording the method.
            pub fn $name<H, T, S>(handler: H) -> Methods<S>
            where
                H: Handler<T, S>,
                T: 'static,
                S: Clone + Send + Sync + 'static,
            {
                Methods {
                    router: axum::routing::$name(handler),
                    methods: vec![Method::$method],
                }
            }
        )+

        impl<S: Clone + Send + Sync + 'static> Methods<S> {
            $(
                /// As `MethodRouter`'s method of the same name, recording the method.
                pub fn $name<H, T>(mut self, handler: H) -> Self
                where
                    H: Handler<T, S>,
                    T: 'static,
                {
                    self.router = self.router.$name(handler);
                    self.methods.push(Method::$method);
                    self
                }
            )+
        }
    };
}

method_fns!(get => GET, post => POST, put => PUT, patch => PATCH, delete => DELETE);

impl<S: Clone + Send + Sync + 'static> Methods<S> {
    /// As `MethodRouter::layer`: wraps the handlers added so far.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request, Error = Infallible> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.layer(layer);
        self
    }
}

/// A router that keeps the table of what it serves.
pub struct Routes<S> {
    router: Router<S>,
    table: Vec<RouteEntry>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// As `Router::route`.
    pub fn route(mut self, path: &str, methods: Methods<S>) -> Self {
        self.table
            .extend(methods.methods.into_iter().map(|method| RouteEntry {
                method,
                path: path.to_string(),
            }));
        self.router = self.router.route(path, methods.router);
        self
    }

    /// As `Router::nest`: `inner`'s routes under `prefix`.
    pub fn nest(mut self, prefix: &str, inner: Routes<S>) -> Self {
        self.table
            .extend(inner.table.into_iter().map(|r| RouteEntry {
                method: r.method,
                path: format!("{prefix}{}", r.path),
            }));
        self.router = self.router.nest(prefix, inner.router);
        self
    }

    /// As `Router::layer`: wraps every route added so far (the table is unchanged).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.layer(layer);
        self
    }

    /// The axum router and the table of its routes, sorted.
    pub fn into_parts(mut self) -> (Router<S>, Vec<RouteEntry>) {
        self.table.sort();
        (self.router, self.table)
    }
}
