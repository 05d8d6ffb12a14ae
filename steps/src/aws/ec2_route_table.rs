//! `aws.ec2.route_table`: a route table with its routes (to an internet or NAT
//! gateway) and its subnet associations, converged: missing routes are added,
//! routes to another target are replaced, subnets are (re)associated.

use aws_sdk_ec2::types::{Filter, ResourceType};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination CIDR, like 0.0.0.0/0.
    pub destination: String,
    pub gateway_id: Option<String>,
    pub nat_gateway_id: Option<String>,
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.route_table", step = RouteTable)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the VPC (required)
    pub vpc_id: String,
    /// { destination, gateway_id | nat_gateway_id } each
    #[serde(default)]
    pub routes: Vec<Route>,
    /// subnets associated with this table
    #[serde(default)]
    pub subnet_ids: Vec<String>,
}

impl Step for RouteTable {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        Ok(match super::owned::one::<aws_sdk_ec2::types::RouteTable>(&ec2, &owner).await? {
            None => Plan::create(),
            Some(t) => {
                let mut changes = Vec::new();
                for want in &p.routes {
                    let target = want.gateway_id.as_deref().or(want.nat_gateway_id.as_deref()).unwrap_or("?");
                    let have =
                        t.routes().iter().find(|r| r.destination_cidr_block() == Some(want.destination.as_str()));
                    let now = have.and_then(|r| r.gateway_id().or(r.nat_gateway_id()));
                    if now != Some(target) {
                        changes.push(format!("route {}: {} -> {target}", want.destination, now.unwrap_or("none")));
                    }
                }
                for subnet in &p.subnet_ids {
                    if !t.associations().iter().any(|a| a.subnet_id() == Some(subnet.as_str())) {
                        changes.push(format!("associate {subnet}"));
                    }
                }
                Plan::changes(changes)
            }
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let ec2 = &super::ec2(p.region.as_deref()).await;
        super::owned::delete_all_after(ctx, ec2, &Owner::new(&p.stack, ctx), |t: aws_sdk_ec2::types::RouteTable, _| {
            Box::pin(async move {
                for a in t.associations().iter().filter(|a| a.main() != Some(true)) {
                    if let Some(assoc) = a.route_table_association_id() {
                        let gone = ec2.disassociate_route_table().association_id(assoc).send().await;
                        gone.or_absent("ec2:DisassociateRouteTable", &["InvalidAssociationID.NotFound"])?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    const DOC: KindDoc = KindDoc {
        summary: "A route table with its routes and subnet associations, converged on every run.",
        outputs: &[("route_table_id", "the table's id"), ("action", "`created` or `adopted`")],
        example: "- id: public-routes\n  uses: aws.ec2.route_table\n  with:\n    stack: \"${{ inputs.stack }}\"\n    vpc_id: \"${{ steps.vpc.outputs.vpc_id }}\"\n    routes: [{ destination: 0.0.0.0/0, gateway_id: \"${{ steps.igw.outputs.igw_id }}\" }]\n    subnet_ids: [\"${{ steps.public-a.outputs.subnet_id }}\"]\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        for (i, r) in p.routes.iter().enumerate() {
            if r.gateway_id.is_some() == r.nat_gateway_id.is_some() {
                let i = i.to_string();
                problems.push(ParamProblem::at(
                    &["routes", &i],
                    "a route needs exactly one of `gateway_id` and `nat_gateway_id`",
                ));
            }
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let (table, action) = match super::owned::one::<aws_sdk_ec2::types::RouteTable>(&ec2, &owner).await? {
            Some(t) if t.vpc_id() != Some(p.vpc_id.as_str()) => {
                let detail = format!("is in {}, not in {}", t.vpc_id().unwrap_or("?"), p.vpc_id);
                let hint = "the stack's VPC changed: destroy the old network first";
                return Err(owner.conflict("route table", t.route_table_id().unwrap_or("?"), detail, hint));
            }
            Some(t) => (t, "adopted"),
            None => {
                ctx.progress(format!("creating route table {}", owner.name()));
                let created = ec2
                    .create_route_table()
                    .vpc_id(&p.vpc_id)
                    .tag_specifications(owner.ec2_tag_spec(ResourceType::RouteTable))
                    .send()
                    .await
                    .or_step_error("ec2:CreateRouteTable")?;
                let id = created
                    .route_table()
                    .and_then(|t| t.route_table_id())
                    .ok_or_else(|| StepError::retryable("ec2:CreateRouteTable answered without the resource"))?;
                (super::owned::visible(ctx, &ec2, &owner, id).await?, "created")
            }
        };
        let id = table.route_table_id().unwrap_or_default().to_string();
        let fresh = action == "created";
        for want in &p.routes {
            let have = table.routes().iter().find(|r| r.destination_cidr_block() == Some(want.destination.as_str()));
            let same = have.is_some_and(|r| {
                r.gateway_id() == want.gateway_id.as_deref() && r.nat_gateway_id() == want.nat_gateway_id.as_deref()
            });
            if same {
                continue;
            }
            let target = want.gateway_id.as_deref().or(want.nat_gateway_id.as_deref()).unwrap_or("?");
            // ReplaceRoute and CreateRoute take the same fields.
            macro_rules! route {
                ($call:ident) => {
                    ec2.$call()
                        .route_table_id(&id)
                        .destination_cidr_block(&want.destination)
                        .set_gateway_id(want.gateway_id.clone())
                        .set_nat_gateway_id(want.nat_gateway_id.clone())
                        .send()
                        .await
                };
            }
            if have.is_some() {
                route!(replace_route).or_step_error("ec2:ReplaceRoute")?;
                ctx.log(format!("{id}: route {} now to {target}", want.destination));
            } else {
                route!(create_route).or_step_error_created("ec2:CreateRoute", fresh)?;
                ctx.log(format!("{id}: route {} to {target}", want.destination));
            }
        }
        for subnet in &p.subnet_ids {
            if table.associations().iter().any(|a| a.subnet_id() == Some(subnet.as_str())) {
                continue;
            }
            // A subnet has one explicit association at most: move it if it has another.
            let current = ec2
                .describe_route_tables()
                .filters(Filter::builder().name("association.subnet-id").values(subnet).build())
                .send()
                .await
                .or_step_error("ec2:DescribeRouteTables")?;
            let existing = current
                .route_tables()
                .iter()
                .flat_map(|t| t.associations())
                .find(|a| a.subnet_id() == Some(subnet.as_str()))
                .and_then(|a| a.route_table_association_id().map(String::from));
            match existing {
                Some(association) => {
                    ec2.replace_route_table_association()
                        .association_id(&association)
                        .route_table_id(&id)
                        .send()
                        .await
                        .or_step_error("ec2:ReplaceRouteTableAssociation")?;
                }
                None => {
                    ec2.associate_route_table()
                        .route_table_id(&id)
                        .subnet_id(subnet)
                        .send()
                        .await
                        .or_step_error_created("ec2:AssociateRouteTable", fresh)?;
                }
            }
            ctx.log(format!("{id}: associated {subnet}"));
        }
        ctx.log(format!("{action} route table {id} ({} routes, {} subnets)", p.routes.len(), p.subnet_ids.len()));
        Ok(outputs! { route_table_id: id, action })
    }
}

use super::facts::{Facts, Leftover, Sweep};

impl Facts for RouteTable {
    const GC_RANK: u8 = 1;

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        super::owned::leftovers(at, 0.0, |t: &aws_sdk_ec2::types::RouteTable| json!({ "vpc_id": t.vpc_id() })).await
    }
}
