//! The expansion of `#[locked(...)]`, on `proc_macro2` streams so unit tests can drive it.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Token};

use crate::catalog;
use crate::template::{self, Access, Parameter};

/// The attribute's arguments.
struct Args {
    locks: Option<Expr>,
    id: Option<LitStr>,
    template: Option<LitStr>,
    wait: Option<Expr>,
    guard: Option<Ident>,
    /// `root = expr`: where a parameter root comes from.
    roots: Vec<(Ident, Expr)>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args {
            locks: None,
            id: None,
            template: None,
            wait: None,
            guard: None,
            roots: Vec::new(),
        };
        while !input.is_empty() {
            let key = input.call(Ident::parse_any)?;
            input.parse::<Token![=]>()?;
            let name = key.to_string();
            let duplicate = || syn::Error::new(key.span(), format!("`{name}` is given twice"));
            match name.as_str() {
                "locks" => {
                    if args.locks.replace(input.parse()?).is_some() {
                        return Err(duplicate());
                    }
                }
                "id" => {
                    if args.id.replace(input.parse()?).is_some() {
                        return Err(duplicate());
                    }
                }
                "template" => {
                    if args.template.replace(input.parse()?).is_some() {
                        return Err(duplicate());
                    }
                }
                "wait" => {
                    if args.wait.replace(input.parse()?).is_some() {
                        return Err(duplicate());
                    }
                }
                "guard" => {
                    if args.guard.replace(input.parse()?).is_some() {
                        return Err(duplicate());
                    }
                }
                _ => {
                    if args.roots.iter().any(|(k, _)| *k == key) {
                        return Err(duplicate());
                    }
                    let expr: Expr = input.parse()?;
                    args.roots.push((key, expr));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// Where a parameter root comes from.
enum Root<'a> {
    Given(&'a Expr),
    Argument(&'a Ident),
    SelfValue(Span),
    FunctionName,
}

pub(crate) fn locked(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args: Args = syn::parse2(attr)?;
    let function: ItemFn = syn::parse2(item)?;
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &function;
    let f_name = sig.ident.to_string();

    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!("#[locked] wraps an `async fn`; make `{f_name}` async"),
        ));
    }
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!(
                    "#[locked] needs `{f_name}` to return `Result<T, E>` with `E: From<locks::Error>`, \
                     so that failing to take or release the lock is an error"
                ),
            ));
        }
    };
    if let syn::Type::ImplTrait(_) = **ret {
        return Err(syn::Error::new(
            ret.span(),
            "#[locked] needs a named return type `Result<T, E>`, not `impl Trait`",
        ));
    }
    let locks = args.locks.as_ref().ok_or_else(|| {
        syn::Error::new(
            Span::call_site(),
            "#[locked] needs `locks = <expression for the Locks client>`, e.g. `locks = self.locks`",
        )
    })?;
    let id = args.id.as_ref().ok_or_else(|| {
        syn::Error::new(Span::call_site(), "#[locked] needs `id = \"<catalog id>\"`")
    })?;
    let id_text = id.value();
    let (template, template_span) = match &args.template {
        Some(t) => (t.value(), t.span()),
        None => {
            let entries = catalog::entries(catalog::CINDER_TOML);
            match entries.iter().find(|e| e.id == id_text) {
                Some(e) => (e.template.clone(), id.span()),
                None => {
                    let known: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
                    return Err(syn::Error::new(
                        id.span(),
                        format!(
                            "no lock `{id_text}` in the built-in catalog (it has: {}); for a lock of your own \
                             catalog, give its name template too: `template = \"...\"`",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
    };
    let parameters = template::parameters(&template).map_err(|e| {
        syn::Error::new(
            template_span,
            format!("lock `{id_text}`: template `{template}`: {e}"),
        )
    })?;

    // What the function offers: `self`, and arguments bound to a plain name.
    let mut receiver = None;
    let mut arguments: Vec<&Ident> = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => receiver = Some(r.self_token.span),
            FnArg::Typed(t) => {
                if let Pat::Ident(p) = &*t.pat {
                    arguments.push(&p.ident);
                }
            }
        }
    }

    let mut keys = Vec::new();
    let mut values = Vec::new();
    for parameter in &parameters {
        let root = resolve(parameter, &args, receiver, &arguments).ok_or_else(|| {
            let mut offered: Vec<String> = Vec::new();
            if receiver.is_some() {
                offered.push("self".into());
            }
            offered.extend(arguments.iter().map(|a| a.to_string()));
            let given: Vec<String> = args.roots.iter().map(|(k, _)| k.to_string()).collect();
            let root = &parameter.root;
            let mut message = format!(
                "lock `{id_text}` (template `{template}`) needs parameter `{}`, but `{f_name}` has no argument `{root}` \
                 (it has: {})",
                parameter.name,
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            );
            if !given.is_empty() {
                message.push_str(&format!(" and the attribute gives: {}", given.join(", ")));
            }
            message.push_str(&format!(
                "; add the argument, or say where it comes from: `{root} = <expression>`"
            ));
            syn::Error::new(template_span, message)
        })?;
        let access = parameter.path.iter().map(|step| match step {
            Access::Field(name) => {
                let field = Ident::new(name, template_span);
                quote!(.#field)
            }
            Access::Key(key) => {
                let key = LitStr::new(key, template_span);
                quote!([#key])
            }
        });
        let value = match root {
            Root::FunctionName => {
                let name = LitStr::new(&f_name, template_span);
                quote!(::std::string::ToString::to_string(#name))
            }
            Root::Given(expr) => {
                quote!(::std::string::ToString::to_string(&(#expr) #(#access)*))
            }
            Root::Argument(ident) => {
                quote!(::std::string::ToString::to_string(&#ident #(#access)*))
            }
            Root::SelfValue(span) => {
                let self_token = Token![self](span);
                quote!(::std::string::ToString::to_string(&#self_token #(#access)*))
            }
        };
        keys.push(LitStr::new(&parameter.name, template_span));
        values.push(value);
    }
    for (key, _) in &args.roots {
        if !parameters.iter().any(|p| *key == p.root) {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "lock `{id_text}` (template `{template}`) has no parameter starting with `{key}`"
                ),
            ));
        }
    }

    let wait = match &args.wait {
        Some(w) => w.to_token_stream(),
        None => quote!(::locks::Wait::Forever),
    };
    let hidden = |name: &str| Ident::new(name, Span::mixed_site());
    let params_var = hidden("__locks_params");
    let guard_var = hidden("__locks_guard");
    let result_var = hidden("__locks_result");
    let released_var = hidden("__locks_released");
    let error_var = hidden("__locks_error");
    let guard_binding = args
        .guard
        .as_ref()
        .map(|g| quote!(let #g: &::locks::LockGuard = &#guard_var;));
    let stmts = &block.stmts;
    // Errors about the return type point at it.
    let acquire = quote_spanned! {ret.span()=>
        ::locks::Locks::lock_with(&(#locks), #id, &#params_var, #wait).await?
    };
    let convert = quote_spanned! {ret.span()=>
        ::core::convert::From::from(#error_var)
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            let #params_var = ::locks::Params::new() #(.with(#keys, #values))*;
            let #guard_var = #acquire;
            #[allow(clippy::redundant_async_block)]
            let #result_var: #ret = async {
                #guard_binding
                #(#stmts)*
            }
            .await;
            let #released_var = ::locks::LockGuard::release(#guard_var).await;
            match (#result_var, #released_var) {
                (::core::result::Result::Ok(_), ::core::result::Result::Err(#error_var)) => {
                    ::core::result::Result::Err(#convert)
                }
                (#result_var, _) => #result_var,
            }
        }
    })
}

fn resolve<'a>(
    parameter: &Parameter,
    args: &'a Args,
    receiver: Option<Span>,
    arguments: &[&'a Ident],
) -> Option<Root<'a>> {
    let root = parameter.root.as_str();
    if let Some((_, expr)) = args.roots.iter().find(|(k, _)| k == root) {
        return Some(Root::Given(expr));
    }
    if let Some(ident) = arguments.iter().find(|a| **a == root) {
        return Some(Root::Argument(ident));
    }
    if root == "self" {
        return receiver.map(Root::SelfValue);
    }
    if root == "f_name" && parameter.path.is_empty() {
        return Some(Root::FunctionName);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(attr: TokenStream, item: TokenStream) -> Result<String, String> {
        locked(attr, item)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn fields_arguments_and_roots_become_parameters() {
        let out = expand(
            quote!(locks = self.locks, id = "unity-create-host"),
            quote!(
                async fn create_host(&self, name: &str) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .unwrap();
        assert!(out.contains("\"self.host\""), "{out}");
        assert!(out.contains("& self . host"), "{out}");
        assert!(out.contains("\"name\""), "{out}");

        let out = expand(
            quote!(
                locks = self.locks,
                id = "unity-attach-detach",
                client = self.client,
                guard = g
            ),
            quote!(
                async fn detach(&self, host_name: String) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .unwrap();
        assert!(out.contains("\"client.host\""), "{out}");
        assert!(out.contains("& (self . client) . host"), "{out}");
        assert!(out.contains("let g : & :: locks :: LockGuard"), "{out}");
    }

    #[test]
    fn missing_parameter_is_named() {
        let err = expand(
            quote!(locks = self.locks, id = "infinidat"),
            quote!(
                async fn initialize_connection(&self, volume: &Volume) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .unwrap_err();
        assert!(
            err.contains("needs parameter `management_address`")
                && err.contains("(it has: self, volume)")
                && err.contains("`management_address = <expression>`"),
            "{err}"
        );
        let err = expand(
            quote!(locks = LOCKS, id = "unity-create-host"),
            quote!(
                async fn create_host(name: &str) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .unwrap_err();
        assert!(err.contains("needs parameter `self.host`"), "{err}");
    }

    #[test]
    fn f_name_and_explicit_templates() {
        let out = expand(
            quote!(
                locks = self.locks,
                id = "mine",
                template = "{volume.id}-{f_name}"
            ),
            quote!(
                async fn delete_volume(&self, volume: &Volume) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .unwrap();
        assert!(
            out.contains(
                "\"f_name\" , :: std :: string :: ToString :: to_string (\"delete_volume\")"
            ),
            "{out}"
        );
        assert!(out.contains("& volume . id"), "{out}");
    }

    #[test]
    fn misuse_is_reported() {
        let item = quote!(
            async fn f(&self) -> Result<(), E> {
                Ok(())
            }
        );
        let err = expand(quote!(locks = self.locks, id = "nope"), item.clone()).unwrap_err();
        assert!(
            err.contains("no lock `nope`") && err.contains("solidfire"),
            "{err}"
        );
        let err = expand(quote!(id = "lio"), item.clone()).unwrap_err();
        assert!(err.contains("needs `locks ="), "{err}");
        let err = expand(
            quote!(locks = self.locks, id = "lio", host = self.h),
            item.clone(),
        )
        .unwrap_err();
        assert!(err.contains("no parameter starting with `host`"), "{err}");
        let err = expand(
            quote!(locks = self.locks, id = "lio"),
            quote!(
                fn f(&self) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .unwrap_err();
        assert!(err.contains("wraps an `async fn`"), "{err}");
        let err = expand(
            quote!(locks = self.locks, id = "lio"),
            quote!(
                async fn f(&self) {}
            ),
        )
        .unwrap_err();
        assert!(err.contains("to return `Result<T, E>`"), "{err}");
    }
}
