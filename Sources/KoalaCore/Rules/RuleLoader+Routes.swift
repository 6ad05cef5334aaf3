import Foundation
import Yams

/// Reading routes: matching, identity, outputs, billing and memory blocks.
extension FileParser {
    mutating func parseRoute(_ node: Node) -> Route? {
        guard let map = mapping(node, what: "a route", allowed: Self.routeKeys) else { return nil }
        let firstSite = sites.count
        guard let nameNode = require(map, "name", in: node, hint: "give the route a unique name, e.g. 'name: invoice-paid'"),
              let name = plainString(nameNode, what: "route name") else { return nil }
        if !Self.isName(name) {
            errors.append(location(nameNode).error("route name '\(name)' is not allowed",
                hint: "use lower-case letters, digits, '-' and '_'; the name is part of every message id"))
        }
        var types: [TypePattern] = []
        var condition: Condition?
        if let whenNode = require(map, "when", in: node, hint: "say which events this route takes, e.g. 'when: { type: invoice.paid }'"),
           let when = mapping(whenNode, what: "when", allowed: Self.whenKeys) {
            if let typeNode = require(when, "type", in: whenNode, hint: "name an event type, a list of them, or a glob such as customer.subscription.*") {
                for (text, _) in stringList(typeNode, what: "when.type") {
                    types.append(TypePattern(text))
                }
            }
            if let whereNode = when["where"] {
                condition = parseCondition(whereNode)
            }
        }

        var person: PersonSpec?
        if let personNode = map["person"], let p = mapping(personNode, what: "person", allowed: Self.personKeys) {
            let email = expression(p["email"], default: nil, what: "person.email")
            let profileID = expression(p["profile_id"], default: nil, what: "person.profile_id")
            if p["email"] == nil && p["profile_id"] == nil {
                errors.append(location(personNode).error("person needs 'email' or 'profile_id'",
                    hint: "Koala ties every visitor message to an email or a profile_id, e.g. 'email: body.data.object.customer_email'"))
            }
            person = PersonSpec(email: email, profileID: profileID,
                                userID: expression(p["user_id"], default: nil, what: "person.user_id"))
        }

        var outputDestinations: [KoalaMessage.Output: [Destination]] = [:]
        var track: TrackOutput?
        if let trackNode = map["track"], let t = mapping(trackNode, what: "track", allowed: Self.trackKeys) {
            if let node = t["destinations"] { outputDestinations[.track] = destinationList(node) }
            if let eventNode = require(t, "event", in: trackNode, hint: "name the Koala event, e.g. 'event: Invoice Paid'"),
               let event = expression(eventNode, default: nil, what: "track.event") {
                track = TrackOutput(event: event, properties: fields(t["properties"], what: "track.properties"))
            }
        }
        var identify: IdentifyOutput?
        if let identifyNode = map["identify"], let i = mapping(identifyNode, what: "identify", allowed: Self.identifyKeys) {
            if let node = i["destinations"] { outputDestinations[.identify] = destinationList(node) }
            if let traitsNode = require(i, "traits", in: identifyNode, hint: "list the visitor traits to set") {
                identify = IdentifyOutput(traits: fields(traitsNode, what: "identify.traits"))
            }
        }
        var account: AccountOutput?
        if let accountNode = map["account"], let a = mapping(accountNode, what: "account", allowed: Self.accountKeys) {
            if let node = a["destinations"] { outputDestinations[.account] = destinationList(node) }
            let domain = expression(a["domain"], default: nil, what: "account.domain")
            let accountID = expression(a["account_id"], default: nil, what: "account.account_id")
            if a["domain"] == nil && a["account_id"] == nil {
                errors.append(location(accountNode).error("account needs 'domain' or 'account_id'",
                    hint: "Koala keys account traits by domain, e.g. 'domain: person.email | email_domain'"))
            }
            account = AccountOutput(domain: domain, accountID: accountID,
                                    groupID: expression(a["group_id"], default: nil, what: "account.group_id"),
                                    traits: fields(a["traits"], what: "account.traits"))
        }
        var billing: BillingSpec?
        if let billingNode = map["billing"], let b = mapping(billingNode, what: "billing", allowed: BillingSpec.keys) {
            let newWhen = b["new_when"].flatMap { parseCondition($0) }
            var parsed: FieldList = []
            if case .mapping(var expressions) = billingNode {
                expressions["new_when"] = nil
                parsed = fields(.mapping(expressions), what: "billing")
            }
            for key in (b["discount_id"] != nil ? BillingSpec.requiredForDiscount : BillingSpec.required) where b[key] == nil {
                errors.append(location(billingNode).error("billing needs '\(key)'",
                    hint: "the revenue model keeps one ledger per billing customer and one state per subscription: give customer, subscription and status"))
            }
            if account == nil {
                errors.append(location(billingNode).error("route '\(name)' feeds the revenue model but has no 'account'",
                    hint: "add 'account: { domain: person.email | email_domain }': the model sends the billing customer's state as account traits"))
            }
            // Without an amount there is no MRR movement to send, so a provider that names no person (Recurly) may
            // still keep the account's state.
            if person == nil, billing?.expression("mrr") != nil || b["discount_id"] != nil {
                errors.append(location(billingNode).error("route '\(name)' feeds the revenue model an mrr but has no 'person'",
                    hint: "add 'person: { email: … }': MRR movements are sent as the customer's 'MRR Changed' events (or leave out billing.mrr)"))
            }
            if track != nil {
                errors.append(location(map["track"] ?? billingNode).error("route '\(name)' has both 'billing' and 'track'",
                    hint: "a billing route sends the account's state and its MRR movements; put lifecycle events in routes of their own"))
            }
            for spec in memorySpecs(map["remember"]) where spec.name == BillingSpec.ledgerNamespace {
                errors.append(location(billingNode).error("'\(BillingSpec.ledgerNamespace)' is the revenue model's own memory", hint: "remember under another name"))
            }
            billing = BillingSpec(fields: parsed, newWhen: newWhen)
        }
        if (track != nil || identify != nil) && person == nil {
            errors.append(location(node).error("route '\(name)' sends visitor data but has no 'person'",
                hint: "add 'person: { email: … }' so Koala knows whose event or traits these are"))
        }
        let remember = memorySpecs(map["remember"])
        // A route may only remember a state (a discount, say) that later routes read.
        if track == nil && identify == nil && account == nil && billing == nil && map["track"] == nil && map["identify"] == nil && map["account"] == nil
            && !remember.contains(where: { !$0.values.isEmpty }) {
            errors.append(location(node).error("route '\(name)' has no output",
                hint: "add at least one of 'track', 'identify', 'account' or 'billing' (or remember values for later routes)"))
        }
        if remember.contains(where: { $0.values.isEmpty }) && person == nil && account == nil {
            errors.append(location(map["remember"] ?? node).error("route '\(name)' remembers an identity but resolves none",
                hint: "add 'person: { email: … }' (or an account) whose identity is remembered, or remember 'values:'"))
        }
        let destinations = map["destinations"].map { destinationList($0) }
        return Route(name: name, location: location(node), types: types, condition: condition, person: person,
                     track: track, identify: identify, account: account, remember: remember, billing: billing,
                     destinations: destinations, outputDestinations: outputDestinations,
                     sites: Array(sites[firstSite...]))
    }
}
