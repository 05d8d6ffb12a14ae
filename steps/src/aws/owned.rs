//! What the tag-owned EC2 kinds share: finding what a step owns through its
//! ownership tags (every page of the answer), keeping one of it, and
//! removing it all.

use std::pin::Pin;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Address, Filter, InternetGateway, RouteTable, SecurityGroup, Subnet, Vpc};
use ca_a2a_flow_engine::{Outputs, StepContext, StepError};

use super::classify::Deleted;
use super::facts::{Leftover, Sweep, ec2_tags};
use super::{AwsResult, Owner, one_owned};

/// An EC2 resource a step owns by its tags.
pub trait Owned: Clone + Send + Sync + 'static {
    /// What it is called in messages ("subnet").
    const WHAT: &'static str;
    fn id(&self) -> Option<&str>;
    fn tags(&self) -> &[aws_sdk_ec2::types::Tag];
    /// Every resource the filters match.
    fn describe(ec2: &Client, filters: Vec<Filter>) -> impl Future<Output = Result<Vec<Self>, StepError>> + Send;
    /// Deletes the resource `id`; one already gone counts as deleted, one still
    /// held by something AWS has not released yet says so.
    fn delete(ec2: &Client, id: &str) -> impl Future<Output = Result<Deleted, StepError>> + Send;
}

/// An `Owned` whose describe call answers in pages, and its delete call.
macro_rules! paged {
    ($($ty:ty: $what:literal, $call:ident, $list:ident, $id:ident, $api:literal,
       $delete:ident($by:ident), $delete_api:literal, $gone:literal;)*) => {$(
        impl Owned for $ty {
            const WHAT: &'static str = $what;
            fn id(&self) -> Option<&str> {
                self.$id()
            }
            fn tags(&self) -> &[aws_sdk_ec2::types::Tag] {
                self.tags()
            }
            async fn describe(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<Self>, StepError> {
                let mut pages = ec2.$call().set_filters(Some(filters)).into_paginator().send();
                let mut found = Vec::new();
                while let Some(page) = pages.next().await {
                    found.extend(page.or_step_error($api)?.$list().iter().cloned());
                }
                Ok(found)
            }
            async fn delete(ec2: &Client, id: &str) -> Result<Deleted, StepError> {
                ec2.$delete().$by(id).send().await.or_held($delete_api, &[$gone])
            }
        }
    )*};
}

#[rustfmt::skip]
paged! {
    Vpc: "VPC", describe_vpcs, vpcs, vpc_id, "ec2:DescribeVpcs", delete_vpc(vpc_id), "ec2:DeleteVpc", "InvalidVpcID.NotFound";
    Subnet: "subnet", describe_subnets, subnets, subnet_id, "ec2:DescribeSubnets", delete_subnet(subnet_id), "ec2:DeleteSubnet", "InvalidSubnetID.NotFound";
    InternetGateway: "internet gateway", describe_internet_gateways, internet_gateways, internet_gateway_id, "ec2:DescribeInternetGateways", delete_internet_gateway(internet_gateway_id), "ec2:DeleteInternetGateway", "InvalidInternetGatewayID.NotFound";
    RouteTable: "route table", describe_route_tables, route_tables, route_table_id, "ec2:DescribeRouteTables", delete_route_table(route_table_id), "ec2:DeleteRouteTable", "InvalidRouteTableID.NotFound";
    SecurityGroup: "security group", describe_security_groups, security_groups, group_id, "ec2:DescribeSecurityGroups", delete_security_group(group_id), "ec2:DeleteSecurityGroup", "InvalidGroup.NotFound";
}

/// DescribeAddresses answers in one piece (it has no pages).
impl Owned for Address {
    const WHAT: &'static str = "Elastic IP";
    fn id(&self) -> Option<&str> {
        self.allocation_id()
    }
    fn tags(&self) -> &[aws_sdk_ec2::types::Tag] {
        self.tags()
    }
    async fn describe(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<Self>, StepError> {
        let found =
            ec2.describe_addresses().set_filters(Some(filters)).send().await.or_step_error("ec2:DescribeAddresses")?;
        Ok(found.addresses().to_vec())
    }
    async fn delete(ec2: &Client, id: &str) -> Result<Deleted, StepError> {
        let released = ec2.release_address().allocation_id(id).send().await;
        released.or_held("ec2:ReleaseAddress", &["InvalidAllocationID.NotFound"])
    }
}

/// Everything of `T` that `owner`'s tags point at.
pub async fn all<T: Owned>(ec2: &Client, owner: &Owner) -> Result<Vec<T>, StepError> {
    T::describe(ec2, owner.ec2_filters()).await
}

/// What `owner` owns of `T`: nothing (create it), one (adopt it), or a fatal
/// error naming several (something duplicated them).
pub async fn one<T: Owned>(ec2: &Client, owner: &Owner) -> Result<Option<T>, StepError> {
    one_owned(all::<T>(ec2, owner).await?, T::id, T::WHAT, owner)
}

/// Waits until `id`, just created, shows in the very lookup a retry or a
/// resume would use (by `owner`'s tags). EC2's reads lag its writes: a new ID
/// is unknown for seconds, and filters miss it longer; a retry that looked
/// before then would create a second one. Nothing else is done with it until
/// then, so no other call (nor another step) meets a `NotFound` either.
pub async fn visible<T: Owned>(ctx: &StepContext, ec2: &Client, owner: &Owner, id: &str) -> Result<T, StepError> {
    let what = format!("new {} {id}", T::WHAT);
    let every = super::wait::interval(std::time::Duration::from_secs(1));
    super::wait::until(ctx, &what, std::time::Duration::from_secs(300), every, || async {
        Ok(match all::<T>(ec2, owner).await?.into_iter().find(|r| r.id() == Some(id)) {
            Some(found) => super::wait::Poll::Ready(found),
            None => super::wait::Poll::Pending("not visible to AWS's reads by its tags yet".into()),
        })
    })
    .await
}

/// Everything of `T` carrying ca-a2a-flow's ownership tags, whatever its stack,
/// as `gc` sees it: each costing `monthly`, removed by its kind's `destroy` with `params`.
pub async fn leftovers<T: Owned>(
    at: &Sweep,
    monthly: f64,
    params: impl Fn(&T) -> serde_json::Value,
) -> Result<Vec<Leftover>, StepError> {
    let ours = Filter::builder().name("tag-key").values(super::owner::TAG_STACK).build();
    let found = T::describe(&at.ec2, vec![ours]).await?;
    Ok(found.iter().map(|r| Leftover::new(ec2_tags(r.tags()), r.id(), monthly, params(r))).collect())
}

/// Removes everything of `T` that `owner`'s tags point at (a resource already
/// gone counts as removed), and says what it removed.
pub async fn delete_all<T: Owned>(ctx: &StepContext, ec2: &Client, owner: &Owner) -> Result<Outputs, StepError> {
    delete_all_after(ctx, ec2, owner, |_: T, _| Box::pin(async { Ok(()) })).await
}

/// [`delete_all`], each resource once `before` (given it and its id) let go of
/// what holds it (an attachment, an association).
pub async fn delete_all_after<'a, T: Owned>(
    ctx: &StepContext,
    ec2: &Client,
    owner: &Owner,
    before: impl Fn(T, String) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + 'a>>,
) -> Result<Outputs, StepError> {
    let mut ids = Vec::new();
    for found in all::<T>(ec2, owner).await? {
        let id = found.id().unwrap_or_default().to_string();
        ctx.progress(format!("deleting {} {id}", T::WHAT));
        before(found, id.clone()).await?;
        let what = format!("{} {id}", T::WHAT);
        super::wait::until_released(ctx, &what, || T::delete(ec2, &id)).await?;
        ids.push(id);
    }
    Ok(super::removed(ctx, T::WHAT, &ids))
}
