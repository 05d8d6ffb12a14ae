//! `#[derive(Parameters)]` on a step kind's `Params` struct writes its
//! documentation from the struct itself: one row per field, in order, with the
//! field's name, a type said in workflow terms (`string`, `integer`, `list`, …)
//! and the field's doc comment. The list of parameters is then the list of
//! fields: a field cannot be added, renamed or removed without its row
//! following.
//!
//! On a field:
//! - `#[param(doc = PATH)]`: the description is this `&'static str` constant
//!   (shared descriptions, like a stack's naming rules), not a doc comment.
//! - `#[param(ty = "duration")]`: the type as shown, where the Rust type does
//!   not say it (a duration kept as text).
//!
//! A field with neither a doc comment nor `doc = …` is a compile error.
//!
//! On the struct, `#[kind(name = "aws.ec2.vpc", step = Vpc)]` also declares
//! the step kind these parameters belong to: the unit struct `Vpc`, with its
//! name and parameter type ([`Kind`]); the kind's file then implements only
//! what is its own (`Step`).
//!
//! [`Kind`]: ../ca_a2a_flow_engine/trait.Kind.html

use proc_macro::TokenStream;
use quote::quote;
use syn::{
    Data, DeriveInput, Expr, Fields, GenericArgument, Lit, LitStr, Meta, PathArguments, Type, parse_macro_input,
};

#[proc_macro_derive(Parameters, attributes(param, kind))]
pub fn derive_parameters(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match rows(&input).and_then(|rows| Ok((rows, kind(&input)?))) {
        Ok((rows, kind)) => {
            let name = &input.ident;
            quote! {
                impl ::ca_a2a_flow_engine::Parameters for #name {
                    const DOC: &'static [::ca_a2a_flow_engine::DocRow] = &[#(#rows),*];
                }
                #kind
            }
            .into()
        }
        Err(e) => e.to_compile_error().into(),
    }
}

/// `#[kind(name = "…", step = Ident)]`: the kind's unit struct and its [`Kind`] impl.
fn kind(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let Some(attr) = input.attrs.iter().find(|a| a.path().is_ident("kind")) else {
        return Ok(quote!());
    };
    let given = pairs(attr, &["name", "step"])?;
    let (Some(name), Some(step)) = (given.get("name"), given.get("step")) else {
        return Err(syn::Error::new_spanned(attr, "#[kind] needs both `name = \"…\"` and `step = StructName`"));
    };
    let (name, params) = (string(name)?, &input.ident);
    let doc = format!("The `{}` step kind.", name.value());
    Ok(quote! {
        #[doc = #doc]
        pub struct #step;
        impl ::ca_a2a_flow_engine::Kind for #step {
            type Params = #params;
            const KIND: &'static str = #name;
        }
    })
}

fn rows(input: &DeriveInput) -> syn::Result<Vec<proc_macro2::TokenStream>> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(&input.ident, "Parameters is derived for a struct of named fields"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(&input.ident, "Parameters is derived for a struct of named fields"));
    };
    let mut rows = Vec::new();
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named");
        let name = ident.to_string();
        let mut given = std::collections::BTreeMap::new();
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("param")) {
            given.extend(pairs(attr, &["doc", "ty"])?);
        }
        let (shared, ty) = (given.get("doc"), given.get("ty"));
        let ty = match ty {
            Some(t) => string(t)?.value(),
            None => shown_type(&field.ty).ok_or_else(|| {
                syn::Error::new_spanned(&field.ty, "say how this type reads in a workflow: #[param(ty = \"…\")]")
            })?,
        };
        let description = match shared {
            Some(path) => quote!(#path),
            None => {
                let text = doc_comment(&field.attrs);
                if text.is_empty() {
                    return Err(syn::Error::new_spanned(
                        ident,
                        "document this parameter: a doc comment, or #[param(doc = SHARED_TEXT)]",
                    ));
                }
                quote!(#text)
            }
        };
        rows.push(quote!((#name, #ty, #description)));
    }
    Ok(rows)
}

/// The `key = value` pairs of `#[attr(…)]`, each key one of `keys`.
fn pairs(attr: &syn::Attribute, keys: &[&str]) -> syn::Result<std::collections::BTreeMap<String, Expr>> {
    let mut given = std::collections::BTreeMap::new();
    attr.parse_nested_meta(|meta| {
        let key = meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        if !keys.contains(&key.as_str()) {
            return Err(meta.error(format!("expected one of: {}", keys.join(", "))));
        }
        given.insert(key, meta.value()?.parse()?);
        Ok(())
    })?;
    Ok(given)
}

/// A string literal.
fn string(value: &Expr) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(other, "expected a string literal")),
    }
}

/// The field's `///` lines, joined into one line.
fn doc_comment(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let Meta::NameValue(nv) = &attr.meta {
            if let Expr::Lit(lit) = &nv.value {
                if let Lit::Str(s) = &lit.lit {
                    lines.push(s.value().trim().to_string());
                }
            }
        }
    }
    lines.join(" ").trim().to_string()
}

/// How a Rust type reads in a workflow file; `Option<T>` reads as `T`.
fn shown_type(ty: &Type) -> Option<String> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    let shown = match last.ident.to_string().as_str() {
        "Option" => {
            let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
            let Some(GenericArgument::Type(inner)) = args.args.first() else { return None };
            return shown_type(inner);
        }
        "String" | "Stack" => "string",
        "bool" => "boolean",
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "integer",
        "f64" => "number",
        "Vec" => "list",
        "BTreeMap" | "HashMap" => "map",
        "HumanDuration" => "duration",
        _ => return None,
    };
    Some(shown.to_string())
}
