"""The constructed examples of the format specs (../shared/formats/), shared by the tests."""

ADYEN_EXAMPLE = """\
Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,Creation Date,TimeZone,Type,Modification Reference,Gross Currency,Gross Debit (GC),Gross Credit (GC),Exchange Rate,Net Currency,Net Debit (NC),Net Credit (NC),Commission (NC),Markup (NC),Scheme Fees (NC),Interchange (NC),Payment Method Variant,Modification Merchant Reference,Batch Number,Reserved4,Reserved5,Reserved6,Reserved7,Reserved8,Reserved9,Reserved10
ExampleCo,ExampleCasinoEUR,Q1W2E3R4T5Y6U7I8,dep-000101,visa,2026-03-02 10:15:00,CET,Settled,A1S2D3F4G5H6J7K8,EUR,,100.00,1,EUR,,98.10,,0.60,0.30,1.00,visaclassic,,812,,,,,,,
ExampleCo,ExampleCasinoEUR,Z9X8C7V6B5N4M3L2,dep-000102,mc,2026-03-02 11:00:00,CET,Refunded,P0O9I8U7Y6T5R4E3,EUR,20.00,,1,EUR,20.00,,,,,,mcstandardcredit,wd-000077,812,,,,,,,
ExampleCo,ExampleCasinoEUR,K1J2H3G4F5D6S7A8,dep-000090,visa,2026-03-03 09:30:00,CET,Chargeback,M1N2B3V4C5X6Z7L8,EUR,50.00,,1,EUR,65.00,,15.00,,,,visaclassic,,812,,,,,,,
ExampleCo,ExampleCasinoEUR,,,,2026-03-04 06:00:00,CET,Fee,Transaction Fees March 2026,EUR,,,,EUR,3.10,,,,,,,,812,,,,,,,
ExampleCo,ExampleCasinoEUR,,,,2026-03-04 06:00:00,CET,MerchantPayout,"TX0000000001XT batch 812, ExampleCasinoEUR",EUR,,,,EUR,10.00,,,,,,,,812,,,,,,,
"""

STRIPE_EXAMPLE = """\
automatic_payout_id,automatic_payout_effective_at_utc,balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,description,customer_facing_amount,customer_facing_currency,payment_intent_id,payment_metadata[order_id]
po_1TestPayout0001,2026-03-05 00:00:00,txn_1A,2026-03-02 10:15:00,2026-03-04 00:00:00,eur,100.00,1.65,98.35,charge,ch_1A,Deposit dep-000101,100.00,eur,pi_1A,dep-000101
po_1TestPayout0001,2026-03-05 00:00:00,txn_1B,2026-03-02 12:00:00,2026-03-04 00:00:00,eur,25.00,0.69,24.31,charge,ch_1B,Deposit dep-000102,2700,jpy,pi_1B,dep-000102
po_1TestPayout0001,2026-03-05 00:00:00,txn_1C,2026-03-03 09:00:00,2026-03-04 00:00:00,eur,-20.00,0.00,-20.00,refund,re_1C,Refund dep-000090,-20.00,eur,pi_1C,dep-000090
po_1TestPayout0001,2026-03-05 00:00:00,txn_1D,2026-03-03 11:00:00,2026-03-04 00:00:00,eur,-50.00,15.00,-65.00,dispute,du_1D,Chargeback withdrawal for ch_1D,-50.00,eur,pi_1D,dep-000070
po_1TestPayout0001,2026-03-05 00:00:00,txn_1E,2026-03-05 00:00:00,2026-03-05 00:00:00,eur,-37.66,0.00,-37.66,payout,po_1TestPayout0001,STRIPE PAYOUT,,,,
"""

PAYPAL_EXAMPLE = """\
"RH",2026/03/03 02:10:00 -0800,"A","EXAMPLEACCT01",009,
"FH",01
"SH",2026/03/02 00:00:00 -0800,2026/03/02 23:59:59 -0800,"EXAMPLEACCT01",""
"CH","Transaction ID","Invoice ID","PayPal Reference ID","PayPal Reference ID Type","Transaction Event Code","Transaction Initiation Date","Transaction Completion Date","Transaction Debit or Credit","Gross Transaction Amount","Gross Transaction Currency","Fee Debit or Credit","Fee Amount","Fee Currency","Custom Field","Consumer ID","Payment Tracking ID","Store ID","Bank Reference ID","Credit Transactional Fee","Credit Promotional Fee","Credit Term"
"SB","1AB23456CD789012E","dep-000101","","","T0006",2026/03/02 10:15:00 -0800,2026/03/02 10:15:02 -0800,"CR",10000,"EUR","DR",349,"EUR","player-42","PAYER0001","","","",,,
"SB","2FG34567HI890123J","dep-000090","1ZY98765XW432109V","TXN","T1107",2026/03/02 12:00:00 -0800,2026/03/02 12:00:01 -0800,"DR",2000,"EUR","CR",35,"EUR","player-17","PAYER0002","","","",,,
"SB","3KL45678MN901234P","","","","T0400",2026/03/02 18:00:00 -0800,2026/03/02 18:00:00 -0800,"DR",5000,"EUR","",,"","","","","","BANKREF0001",,,
"SF","EUR",10000,7000,35,349,"CR",20000,"CR",22686,"CR",20000,"CR",22686,"CR",0,"CR",0,3
"SC",3
"RF","EUR",10000,7000,35,349,"CR",20000,"CR",22686,"CR",20000,"CR",22686,"CR",0,"CR",0,3
"RC",3
"FF",12
"""

CAMT_V08_EXAMPLE = """\
<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>MSG-20260305-0001</MsgId><CreDtTm>2026-03-05T18:00:00+01:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>STMT-20260305-MT01</Id>
      <ElctrncSeqNb>64</ElctrncSeqNb>
      <CreDtTm>2026-03-05T18:00:00+01:00</CreDtTm>
      <Acct><Id><IBAN>MT84MALT011000012345MTLCAST001S</IBAN></Id><Ccy>EUR</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">1000.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-03-05</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">1022.66</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-03-05</Dt></Dt></Bal>
      <Ntry>
        <Amt Ccy="EUR">10.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>2026-03-05</Dt></BookgDt><ValDt><Dt>2026-03-05</Dt></ValDt>
        <AcctSvcrRef>BANKREF-0001</AcctSvcrRef>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>
        <NtryDtls><TxDtls>
          <Refs><EndToEndId>TX0000000001XT</EndToEndId></Refs>
          <Amt Ccy="EUR">10.00</Amt><CdtDbtInd>CRDT</CdtDbtInd>
          <RltdPties><Dbtr><Pty><Nm>Adyen N.V.</Nm></Pty></Dbtr></RltdPties>
          <RmtInf><Ustrd>TX0000000001XT batch 812, ExampleCasinoEUR</Ustrd></RmtInf>
        </TxDtls></NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="EUR">37.66</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>2026-03-05</Dt></BookgDt><ValDt><Dt>2026-03-05</Dt></ValDt>
        <AcctSvcrRef>BANKREF-0002</AcctSvcrRef>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>
        <NtryDtls><TxDtls><Refs><EndToEndId>NOTPROVIDED</EndToEndId></Refs>
          <RmtInf><Ustrd>STRIPE po_1TestPayout0001</Ustrd></RmtInf></TxDtls></NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="EUR">25.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>2026-03-05</Dt></BookgDt><ValDt><Dt>2026-03-05</Dt></ValDt>
        <AcctSvcrRef>BANKREF-0003</AcctSvcrRef>
        <BkTxCd><Domn><Cd>ACMT</Cd><Fmly><Cd>MDOP</Cd><SubFmlyCd>CHRG</SubFmlyCd></Fmly></Domn></BkTxCd>
        <AddtlNtryInf>Account maintenance fee</AddtlNtryInf>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"""

#: The same statement in version 02 (status as text, no TxDtls/Amt, Dbtr/Nm), with a second statement,
#: a pending entry, a DtTm booking date and an Othr/Id account.
CAMT_V02 = """\
<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>MSG-2</MsgId><CreDtTm>2026-03-05T18:00:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>STMT-A</Id><CreDtTm>2026-03-05T18:00:00</CreDtTm>
      <Acct><Id><IBAN>MT84MALT011000012345MTLCAST001S</IBAN></Id></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">5.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Dt><Dt>2026-03-05</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">5.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-03-05</Dt></Dt></Bal>
      <Ntry>
        <Amt Ccy="EUR">10.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><DtTm>2026-03-05T23:30:00+01:00</DtTm></BookgDt>
        <AcctSvcrRef>B-1</AcctSvcrRef>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>
        <NtryDtls><TxDtls>
          <Refs><EndToEndId>TX0000000001XT</EndToEndId></Refs>
          <RltdPties><Dbtr><Nm>Adyen N.V.</Nm></Dbtr></RltdPties>
          <RmtInf><Ustrd>part one</Ustrd><Ustrd>part two</Ustrd></RmtInf>
        </TxDtls></NtryDtls>
        <AddtlNtryInf>Adyen payout</AddtlNtryInf>
      </Ntry>
      <Ntry>
        <Amt Ccy="EUR">99.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>PDNG</Sts>
        <ValDt><Dt>2026-03-06</Dt></ValDt>
        <BkTxCd><Prtry><Cd>NTRF+166</Cd></Prtry></BkTxCd>
      </Ntry>
    </Stmt>
    <Stmt>
      <Id>STMT-B</Id><CreDtTm>2026-03-05T18:00:00</CreDtTm>
      <Acct><Id><Othr><Id>ACC-JPY-1</Id></Othr></Id></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="JPY">1000</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-03-05</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="JPY">700</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-03-05</Dt></Dt></Bal>
      <Ntry>
        <Amt Ccy="JPY">300</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2026-03-05</Dt></BookgDt>
        <AcctSvcrRef>B-2</AcctSvcrRef>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"""
